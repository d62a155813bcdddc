"""A local, scaled-time simulation of GCP + GKE, Kubernetes + KubeRay and the Ray Serve OpenAI endpoint.

It runs as real servers on localhost that speak the real wire protocols (GKE REST, the Kubernetes API
over HTTPS, the OpenAI-compatible chat API), so the project's gateways reach it with the official
clients and only the endpoint and credentials differ. It also serves a control API under `/_sandbox/`
for tests and demos: faults, inventory, recorded requests, the clock and the metered GPU bill.
It never imports `flows` or `tasks`. It is a simulation: nothing here talks to Google.
"""

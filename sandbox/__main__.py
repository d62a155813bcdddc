"""`python -m sandbox --port 8089 [--time-scale 60] [--profile realistic] [--seed 0]`: run until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import threading

from sandbox.app import DEFAULT_PORT, Sandbox
from sandbox.clock import DEFAULT_TIME_SCALE
from sandbox.profile import DEFAULT_PROFILE, available_profiles


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="A local, scaled-time SIMULATION of GKE (nothing talks to Google).")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    parser.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE,
                        help=f"simulated seconds per real second (default {DEFAULT_TIME_SCALE:g})")
    parser.add_argument("--profile", default=DEFAULT_PROFILE, choices=available_profiles(),
                        help=f"timing profile (default {DEFAULT_PROFILE})")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids, names and rate faults")
    parser.add_argument("--gke-only", action="store_true",
                        help="serve only the GKE API (clusters get no simulated Kubernetes)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sandbox = Sandbox(time_scale=args.time_scale, profile=args.profile, seed=args.seed, port=args.port,
                      kubernetes=not args.gke_only)
    with sandbox:
        url = sandbox.gke_url
        print(f"GKE sandbox (a simulation) at {args.time_scale:g}x, profile {args.profile!r}, seed {args.seed}",
              f"  GKE API (container v1/v1beta1):  {url}",
              f"  Service Usage API:               {url}",
              f"  control API:                     {url}/_sandbox/  (inventory, requests, faults, clock)",
              "  gcloud:  export CLOUDSDK_CONFIG=$(mktemp -d)   # keep your real configuration apart",
              f"           gcloud config set api_endpoint_overrides/container {url}/",
              f"           gcloud config set api_endpoint_overrides/serviceusage {url}/",
              "           gcloud config set project sandbox-project",
              "           gcloud config set auth/disable_credentials true   (or, for kubectl's auth plugin:",
              "           gcloud config set auth/access_token_file FILE  with any text in FILE)",
              "  flows:   export GKE_LLM_FLOWS_SIMULATED_CLOCK=" + sandbox.flows_clock_env()
              + "   (so the flows' deadlines run on simulated time)",
              "Ctrl-C to stop.", sep="\n", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()

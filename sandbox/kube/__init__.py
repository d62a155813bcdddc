"""Per-cluster simulated Kubernetes: the object store, the HTTPS API server over it, and the
controllers (nodes, scheduler, Deployments, KubeRay, Ray Serve) that act on it on the scaled clock."""

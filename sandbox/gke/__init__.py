"""The simulated GKE API (container.googleapis.com v1 and v1beta1 REST) and the Service Usage bit gcloud asks.

`service.GkeService` holds the semantics (clusters, node pools, operations, faults, billing) and
`routes.gke_routes` serves it over HTTP the way the official clients and `gcloud` call it.
"""

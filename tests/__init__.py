"""Tests: unit (pure planners, renderers, validators), integration (tasks against the sandbox over
HTTP), end-to-end (flows on a real local Prefect server and the sandbox) and live (real GCP; skipped
without credentials)."""

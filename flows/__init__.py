"""The order of work and its guarantees.

Spin-up (`serve_llm`), spin-down (`teardown_llm`), redeploy, janitor and status flows: they call tasks,
set retry policy, own teardown on failure, cancellation and crash, and hold one lifecycle operation per
stack at a time. No API calls happen here directly.
"""

"""One resource each: observe, plan, act and wait, as Prefect tasks.

`tasks/gateways/` holds the thin modules that alone import google-cloud-container, kubernetes and httpx
and translate their errors into ours (`blocks.errors`). Every `ensure_*` task is idempotent and retries
only transient errors; every `wait_for_*` has a deadline from an injected clock.
"""

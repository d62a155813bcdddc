"""Thin gateways: the only modules that import google-cloud-container, kubernetes and httpx.

Each translates its SDK's exceptions into `blocks.errors` (`TransientError` / `PermanentError`
subclasses) with `raise ... from e`, and does nothing more.
"""

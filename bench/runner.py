"""`python -m bench.runner STACK_FILE [NAME]`: serve the spin-up deployment for the fault matrix's cancel runs.

A run started in-process cannot be cancelled from the API (nothing would kill it and run the
on_cancellation hook); under `serve()` the runner does both, as it does for a UI cancel.
"""

from __future__ import annotations

import sys

FLOW, DEPLOYMENT = "serve-llm", "bench-spin-up"


def main(argv: list[str]) -> int:
    from prefect import serve

    from flows.spin_up import serve_llm

    name = argv[1] if len(argv) > 1 else DEPLOYMENT
    serve(serve_llm.to_deployment(name=name, parameters={"stack": {"file": argv[0]}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmarks and the fault matrix: figures measured on the sandbox (see bench/README.md)."""

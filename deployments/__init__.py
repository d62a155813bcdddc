"""When things run: `prefect.yaml` (schedules, event triggers, concurrency, parameters), the setup
command that registers Blocks and automations, and a local `serve()` entry point. Only flows are
imported here."""

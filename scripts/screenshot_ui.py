"""Screenshot the Prefect UI after a sandbox spin-up: `python scripts/screenshot_ui.py`.

Starts a local Prefect server with its UI (own temporary PREFECT_HOME and SQLite DB), runs
`python -m flows demo` against it (spin-up, validation and spin-down on the embedded sandbox), then
points headless Chromium at the spin-up's flow run page and at its summary artifact and writes
docs/images/flow-run.png and docs/images/spin-up-summary.png. Not part of CI: it needs Chromium
(Debian: `apt-get install -y chromium`) and takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.processes import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
SUMMARY_KEY = "deepseek-r1-spin-up"      # flows.spin_up: f"{spec.name}-spin-up" for the example stack
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int) -> tuple[subprocess.Popen, dict[str, str]]:
    """Start `prefect server start` with the UI on `port`; return the process and the env that targets it."""
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_UI_API_URL=api,
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home}/prefect.db",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_UI_ENABLED="true")
    log = open(home / "server.log", "w")  # noqa: SIM115 - lives as long as the server process
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=str(home))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited:\n{(home / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                return proc, env
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_process_group(proc)
    raise SystemExit("prefect server did not become healthy within 120 s")


def run_demo(env: dict[str, str], time_scale: float, attempts: int) -> None:
    """Run the demo against the server until one spin-up completes (a busy machine can fail one)."""
    for attempt in range(1, attempts + 1):
        done = subprocess.run([sys.executable, "-m", "flows", "demo", "--time-scale", f"{time_scale:g}"],
                              env=env, cwd=str(ROOT), capture_output=True, text=True)
        print(done.stdout[-3000:])
        if done.returncode == 0:
            return
        print(f"demo attempt {attempt} exited {done.returncode}; stderr tail:\n{done.stderr[-1500:]}")
    raise SystemExit("the demo never completed a spin-up")


def latest_spin_up(api: str) -> tuple[str, str]:
    """Return (flow run id, summary artifact id) of the newest completed serve-llm run."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={
        "flows": {"name": {"any_": ["serve-llm"]}}, "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
        "sort": "START_TIME_DESC", "limit": 1}, timeout=30).json()
    if not runs:
        raise SystemExit("no completed serve-llm flow run on the server")
    run_id = runs[0]["id"]
    artifacts = httpx.post(f"{api}/artifacts/filter", json={
        "artifacts": {"key": {"any_": [SUMMARY_KEY]}, "flow_run_id": {"any_": [run_id]}}}, timeout=30).json()
    if not artifacts:
        raise SystemExit(f"flow run {run_id} has no {SUMMARY_KEY!r} artifact")
    return run_id, artifacts[0]["id"]


def screenshot(chromium: str, url: str, out: Path, *, size: str, wait_ms: int) -> None:
    """Load `url` in headless Chromium and write a PNG of the window to `out`."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                        f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
                       check=True, capture_output=True, timeout=180)
    print(f"wrote {out} ({out.stat().st_size} bytes) from {url}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/screenshot_ui.py", description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=60.0, help="sandbox speed-up for the demo run")
    parser.add_argument("--attempts", type=int, default=2, help="demo runs to try before giving up")
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the PNG files")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time Chromium lets the page render")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Chromium not found: apt-get update && apt-get install -y chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="prefect-ui-") as home:
        port = free_port()
        proc, env = start_server(Path(home), port)
        try:
            run_demo(env, args.time_scale, args.attempts)
            run_id, artifact_id = latest_spin_up(env["PREFECT_API_URL"])
            base = f"http://127.0.0.1:{port}"
            screenshot(chromium, f"{base}/runs/flow-run/{run_id}?tab=Artifacts", args.out / "flow-run.png",
                       size="1440,1100", wait_ms=args.wait_ms)
            screenshot(chromium, f"{base}/artifacts/artifact/{artifact_id}", args.out / "spin-up-summary.png",
                       size="1440,1500", wait_ms=args.wait_ms)
        finally:
            stop_process_group(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())

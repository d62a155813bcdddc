"""Every command in the README and docs/ is either run here or marked as needing GCP or a human.

Fenced shell blocks carry a marker after the language: `sh sandbox-safe` blocks are run, each as one
`bash -euo pipefail` script from the project root, against a real local Prefect server of this module's
own (the docs save blocks, deploy and emit events: none of that may leak into other tests' server)
and whatever sandbox the block starts; `sh gcp` blocks need a GCP project and `sh manual`
blocks start something long-running or install software: those two are only syntax-checked
(`bash -n`). Python blocks are compiled. A shell block without a marker fails the test, so a new
command cannot slip into the docs unclassified.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"sh", "bash", "shell", "console"}
MARKERS = {"sandbox-safe", "gcp", "manual"}
BLOCK_TIMEOUT_S = 240
SERVER_START_TIMEOUT_S = 180   # a busy 2-core machine can take minutes to migrate a fresh database
SANDBOX_PORT = 8089          # the port the docs' sandbox commands use (examples/sandbox.yaml points there)
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    markers: frozenset[str]
    body: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the line each starts on."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        words = m.group(1).split()
        lang = words[0] if words else ""
        found.append(Block(path, text.count("\n", 0, m.start()) + 1, lang, frozenset(words[1:]), m.group(2)))
    return found


ALL_BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL_LANGS]
RUNNABLE = [b for b in SHELL_BLOCKS if "sandbox-safe" in b.markers]


def test_the_docs_have_commands_to_run_and_every_shell_block_is_classified():
    assert len(DOCS) >= 5 and len(RUNNABLE) >= 5, f"docs: {DOCS}, runnable blocks: {len(RUNNABLE)}"
    unmarked = [f"{b.where} ({b.lang} {' '.join(sorted(b.markers))})" for b in SHELL_BLOCKS
                if len(b.markers & MARKERS) != 1]
    assert not unmarked, (f"shell blocks need exactly one of {sorted(MARKERS)} after the language "
                          f"(e.g. ```sh sandbox-safe): {unmarked}")


@pytest.mark.parametrize("block", [b for b in SHELL_BLOCKS if "sandbox-safe" not in b.markers],
                         ids=lambda b: b.where)
def test_commands_not_run_here_are_valid_shell(block: Block):
    done = subprocess.run(["bash", "-n"], input=block.body, capture_output=True, text=True)
    assert done.returncode == 0, f"{block.where}: not valid shell:\n{done.stderr}"


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "python"], ids=lambda b: b.where)
def test_python_snippets_compile(block: Block):
    compile(block.body, block.where, "exec")


def test_the_failure_messages_the_operations_guide_quotes_are_in_the_code():
    doc = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    table = doc.split("## What a failure message means")[1].split("\n## ")[0]
    first_cells = [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| `")]
    quoted = [q for cell in first_cells for q in re.findall(r"`([^`]+)`", cell)]
    source = "\n".join(p.read_text(encoding="utf-8") for folder in ("blocks", "tasks", "flows")
                       for p in (ROOT / folder).rglob("*.py"))
    missing = [q for q in quoted if q not in source]
    assert len(quoted) >= 20 and not missing, f"quoted in docs/operations.md but not in the code: {missing}"


@pytest.fixture(scope="module")
def docs_prefect_server(start_prefect_server):
    """A `prefect server start` for the docs' commands alone; yields the environment that targets it."""
    with start_prefect_server("docs-prefect-home", timeout_s=SERVER_START_TIMEOUT_S) as env:
        yield env


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _wait_port_free(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not _port_free(port):
        if time.monotonic() > deadline:
            pytest.fail(f"port {port} is in use (another sandbox?); the docs' sandbox commands need it free")
        time.sleep(0.5)


def run_block(block: Block, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the block as one bash script in its own process group; kill what it leaves behind."""
    proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", block.body], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT_S}s:\n{out[-4000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # a background sandbox the block forgot to stop
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.mark.slow
@pytest.mark.timeout(SERVER_START_TIMEOUT_S + BLOCK_TIMEOUT_S + 60)   # the first one also starts the server
@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.where)
def test_sandbox_safe_commands_run(block: Block, docs_prefect_server, tmp_path):
    if "curl " in block.body and not _which("curl"):
        pytest.skip("curl is not installed")
    if f":{SANDBOX_PORT}" in block.body:
        _wait_port_free(SANDBOX_PORT)
    env = dict(docs_prefect_server, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TMPDIR=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("GKE_LLM_FLOWS_SIMULATED_CLOCK", None)   # each block sets up its own clock, as a reader would
    started = time.monotonic()
    done = run_block(block, env)
    assert done.returncode == 0, f"{block.where} exited {done.returncode}:\n{block.body}\n--- output ---\n" \
                                 f"{done.stdout[-6000:]}"
    print(f"{block.where}: ok in {time.monotonic() - started:.1f}s; output ends:\n{done.stdout[-1500:]}")


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def _block_with(text: str) -> Block:
    return next(b for b in RUNNABLE if text in b.body)


@pytest.mark.slow
@pytest.mark.timeout(SERVER_START_TIMEOUT_S + 2 * BLOCK_TIMEOUT_S)
def test_the_ci_snippet_starts_a_redeploy_with_the_published_model(docs_prefect_server, tmp_path):
    """The operations guide's Python event snippet reaches the deployed `redeploy-llm/on-change` trigger."""
    env = dict(docs_prefect_server, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TMPDIR=str(tmp_path))
    api = env["PREFECT_API_URL"]
    found = httpx.get(f"{api}/deployments/name/redeploy-llm/on-change", timeout=30)
    if found.status_code == 404:      # the going-live rehearsal did not run in this session: deploy now
        assert run_block(_block_with("prefect --no-prompt deploy"), env).returncode == 0
        found = httpx.get(f"{api}/deployments/name/redeploy-llm/on-change", timeout=30)
    deployment_id = found.json()["id"]
    emit = run_block(_block_with("publish_model("), env)
    assert emit.returncode == 0, emit.stdout
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}},
                          timeout=30).json()
        sources = [r["parameters"].get("model_source") for r in runs]
        if "deepseek-ai/DeepSeek-R1-0528" in sources:
            return
        time.sleep(1)
    pytest.fail(f"no redeploy-llm/on-change run with the published model_source after 60 s; runs: {sources}")

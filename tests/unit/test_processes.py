"""bench.processes.stop_process_group: polite stop, forced stop, already gone."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from bench.processes import stop_process_group

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"


def _start(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_group_that_honours_sigterm_stops_without_waiting_for_the_grace():
    proc = _start("import time; print('ready', flush=True); time.sleep(60)")
    started = time.monotonic()
    stop_process_group(proc, grace_s=30)
    assert proc.returncode == -signal.SIGTERM and time.monotonic() - started < 10


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace():
    proc = _start(IGNORES_TERM)
    stop_process_group(proc, grace_s=0.5)
    assert proc.returncode == -signal.SIGKILL


def test_a_group_already_gone_is_fine():
    proc = _start("print('ready', flush=True)")
    proc.wait()
    stop_process_group(proc)
    assert proc.returncode == 0

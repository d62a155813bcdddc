"""Stop child processes the way every driver here needs: the whole process group, politely first."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, *, grace_s: float = 20) -> None:
    """SIGTERM `proc`'s process group, wait up to `grace_s` for it, then SIGKILL the group.

    `proc` must lead its own group (`start_new_session=True`). A group that is already gone is fine.
    """
    if not _signal_group(proc, signal.SIGTERM):
        proc.wait()
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> bool:
    try:
        os.killpg(proc.pid, sig)
        return True
    except ProcessLookupError:
        return False

"""Helpers for tests that drive ``fer-train`` as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys


def sigterm_after_event(args: list[str], event: str) -> tuple[int, dict]:
    """Run ``python -m fer_train.cli ARGS --progress json``, send SIGTERM once ``event`` arrives, and
    return the exit code and the last JSON event it wrote."""
    cmd = [sys.executable, "-m", "fer_train.cli", *args, "--progress", "json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:
        if json.loads(line)["event"] == event:
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    code = proc.wait(timeout=60)
    return code, json.loads(out.strip().splitlines()[-1])

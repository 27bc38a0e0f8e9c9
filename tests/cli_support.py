"""Helpers for tests that drive ``fer-train`` as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path


def planned_config(run_dir: Path, argv: list[str]):
    """The config ``fer-train ARGV --run-dir RUN_DIR`` would train with; nothing is trained."""
    from fer_train.train_cli import _plan_run, _train_parser

    args = [*argv, "--run-dir", str(run_dir)]
    return _plan_run(_train_parser().parse_args(args), args)[0]


def act_after_event(args: list[str], event, act) -> tuple[int, list[dict], str]:
    """Run ``python -m fer_train.cli ARGS --progress json``, call ``act(process)`` once ``event`` arrives (an event
    name, or a predicate on the list of events so far), and return the exit code, the JSON events written after it
    and everything written to stderr."""
    ready = event if callable(event) else (lambda seen: seen[-1]["event"] == event)
    cmd = [sys.executable, "-m", "fer_train.cli", *args, "--progress", "json"]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen = []
        for line in proc.stdout:
            seen.append(json.loads(line))
            if ready(seen):
                break
        act(proc)
        out = proc.stdout.read()
        code = proc.wait(timeout=120)
        err.seek(0)
        return code, [json.loads(line) for line in out.strip().splitlines()], err.read()


def every_arm_ended_an_epoch(arms):
    """A predicate for :func:`act_after_event`: each of ``arms`` has reported an epoch (parallel arms race)."""
    return lambda seen: set(arms) <= {e.get("arm") for e in seen if e["event"] == "epoch"}


def sigterm_after_event(args: list[str], event) -> tuple[int, dict]:
    """SIGTERM to ``fer-train ARGS`` once ``event`` arrives: the exit code and the last JSON event it wrote."""
    code, events, _ = act_after_event(args, event, lambda proc: proc.send_signal(signal.SIGTERM))
    return code, events[-1]


def child_processes(pid: int, marker: str) -> list[int]:
    """The children of ``pid`` whose command line holds ``marker`` (Linux /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if marker in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]

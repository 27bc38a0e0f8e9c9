"""``--parallel-arms``: the arms of a semi-supervised run at the same time, one process each.

Every process trains its own round 1 (none is shared) and reaches the weights the arm reaches when the arms run one
after the other. A Ctrl-C or SIGTERM to the parent is passed on as one SIGTERM to every arm, which saves its epoch.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from fer_runtime.contract import EVENT_MESSAGE

from ..config import TrainConfig
from ..data import load_splits
from ..devices import run_device
from ..progress import Reporter
from ..stops import Interrupted, interrupts_as_exception, stop_requested
from .arm import ArmLoop
from .selection import prepare

INTERRUPTED_EXIT = 130  # an arm that stopped on a signal, its epoch saved


class ArmFailed(RuntimeError):
    """An arm of a ``--parallel-arms`` run died (killed, out of memory, a bug): which one, with what exit code,
    and that ``--resume`` continues from its last saved epoch."""


def _arm_process(config: dict, run_dir: str, arm: str, mode: str, threads: int) -> None:
    """One arm of a ``--parallel-arms`` run, in its own process (and process group: a Ctrl-C reaches the parent,
    which passes on one SIGTERM, so a checkpoint being written is always finished)."""
    os.setpgrp()
    config = TrainConfig.from_dict(config)
    device = run_device(config.device, threads)
    reporter = Reporter(mode)  # plain lines name their arm
    with interrupts_as_exception():
        try:
            data, audit = prepare(load_splits(config), config, device)
            ArmLoop(arm, data, audit, config, Path(run_dir), reporter, share_first_round=False).load().run()
        except (Interrupted, KeyboardInterrupt):
            sys.exit(INTERRUPTED_EXIT)


def how_it_ended(exitcode: int) -> str:
    if exitcode < 0:  # multiprocessing's code for a process ended by a signal
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"stopped with exit code {exitcode}"


def run_arms_in_processes(config: TrainConfig, run_dir: Path, arms: list[str], reporter: Reporter) -> None:
    """Train ``arms`` at the same time, one process each, into ``run_dir/<arm>``. Raises ``Interrupted`` once
    every process has saved its epoch when a stop was asked for, :class:`ArmFailed` naming each arm that failed."""
    import multiprocessing

    threads = config.threads or max(1, (os.cpu_count() or 1) // len(arms))
    mode = "json" if reporter.mode == "json" else "plain"
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pools inherited
    processes = {arm: context.Process(target=_arm_process, args=(config.to_dict(), str(run_dir), arm, mode, threads), name=f"fer-{arm}")
                 for arm in arms}
    reporter.emit(EVENT_MESSAGE, text=f"arms {', '.join(arms)} in {len(arms)} processes, {threads} thread{'s' if threads > 1 else ''} each")
    for process in processes.values():
        process.start()
    forwarded, told = False, set()
    while any(p.is_alive() for p in processes.values()):
        for p in processes.values():
            p.join(timeout=0.5)
        for arm, p in processes.items():  # say at once that an arm died, not after the others' hours
            if p.exitcode not in (None, 0, INTERRUPTED_EXIT) and arm not in told:
                told.add(arm)
                reporter.emit(EVENT_MESSAGE, text=f"arm {arm} {how_it_ended(p.exitcode)}; the other arms go on")
        if stop_requested() is not None and not forwarded:  # Ctrl-C or SIGTERM to this process: stop every arm
            for p in processes.values():
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            forwarded = True
    if forwarded or any(p.exitcode == INTERRUPTED_EXIT for p in processes.values()):
        raise Interrupted("stopped")
    failed = {arm: p.exitcode for arm, p in processes.items() if p.exitcode != 0}
    if failed:
        raise ArmFailed("; ".join(f"arm {arm} {how_it_ended(code)} (its last epoch is in {run_dir / arm}; "
                                     f"--resume {run_dir} continues)" for arm, code in failed.items()))

"""Stopping a run cleanly: SIGTERM and Ctrl-C ask the training loop to stop at the next batch boundary.

The signal handler only records the request (:func:`stop_requested`); the loop checks it between batches
(:func:`check_stop`, or :func:`check_stop_everywhere` for a torchrun group) and raises :class:`Interrupted`, so a
checkpoint being written is always finished and ``--resume`` continues from the last saved epoch.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass

from . import distributed

STOP_CHECK_EVERY = 8  # batches between two agreements on a stop under torchrun (each is a small collective)


class Interrupted(Exception):
    """Raised in the training thread between two batches after SIGINT or SIGTERM."""


class StopAgreed(Interrupted):
    """Raised on every rank of a torchrun group at the same batch, when a stop was asked for on any of them."""


_requested: str | None = None  # the name of the signal that asked for a stop; set by the handler


def stop_requested() -> str | None:
    """The signal (``SIGTERM``, ``SIGINT``) that asked this process to stop, or None."""
    return _requested


def request_stop(reason: str | None) -> None:
    """Ask for a stop (what the signal handler does), or withdraw the request with None."""
    global _requested
    _requested = reason


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop was asked for. Called between batches, never inside a save."""
    if _requested is not None:
        raise Interrupted(_requested)


def check_stop_everywhere(step: int) -> None:
    """:func:`check_stop` for a group of processes: a stop asked for on any rank stops every rank at the same batch
    (they agree every ``STOP_CHECK_EVERY`` batches), so that none is left waiting in a collective for the others."""
    if not distributed.world().distributed:
        check_stop()
    elif step % STOP_CHECK_EVERY == 0 and distributed.any_rank(_requested is not None):
        raise StopAgreed(_requested or "a signal to another rank")


@contextlib.contextmanager
def interrupts_as_exception():
    """While training, SIGTERM and Ctrl-C ask the loop to stop at the next batch boundary.

    The handler only sets a flag, so a checkpoint being written is always finished (an exception raised
    inside ``torch.save`` would leave a stray temporary file). A second signal stops at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if _requested is not None:
            raise Interrupted(signal.Signals(signum).name)
        request_stop(signal.Signals(signum).name)

    request_stop(None)
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        request_stop(None)


@dataclass(frozen=True)
class Stop:
    """How a run stopped early: ``reason`` (the signal), and whether every rank of a torchrun group stopped at the
    same batch (``agreed``; always on one process). A second signal, or Ctrl-C under torchrun, stops one process at once."""

    reason: str
    agreed: bool


def run_until_stopped(run) -> Stop | None:
    """``run()`` with SIGTERM and Ctrl-C turned into a stop at the next batch boundary; None when it ran to its end."""
    try:
        with interrupts_as_exception():
            run()
    except (Interrupted, KeyboardInterrupt) as exc:
        return Stop(str(exc) or "SIGINT", isinstance(exc, StopAgreed) or not distributed.world().distributed)
    return None

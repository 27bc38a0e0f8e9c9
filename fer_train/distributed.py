"""Training one model on several processes (``torchrun``), with DistributedDataParallel.

``torchrun --nproc-per-node N -m fer_train ...`` starts N copies of ``fer-train``; each finds its rank in the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) and :func:`session` joins the group: ``gloo`` on CPU, with
``nccl`` for CUDA tensors when there is a GPU. Outside torchrun nothing here does anything, and the helpers
answer for a world of one process, so the training loop has one code path.

What the loop asks of this module:

- every rank draws the epoch's permutation from the same seed and takes its own consecutive part of every
  global batch (:func:`shard`), so the ranks together see exactly the batches one process sees, and ``--resume``
  and the per-epoch seeds work as they do on one process;
- its own random numbers (augmentation, dropout) from :func:`rank_seed` (rank 0 draws what one process draws);
- sums over the ranks (:func:`sum_over_ranks`): training and validation counts, so every rank sees global numbers;
- decisions made once, by rank 0, and sent to the others (:func:`from_rank0`): the run folder, a resumed
  checkpoint, a teacher's predictions. An error there is raised on rank 0 and :class:`FailedOnRank0` elsewhere;
- a stop asked for on any rank stops them all (:func:`any_rank`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fer_runtime.contract import EVENT_ERROR

TIMEOUT_ENV = "FER_DIST_TIMEOUT"  # seconds a rank waits for the others in one collective before it fails
DEFAULT_TIMEOUT_S = 600  # rank 0 alone runs a distillation teacher once, while the others wait
WORKERS_SETTLE_S = 0.5  # after leaving a group: time for gloo's worker threads to let go of Python objects (leave)
LOST_PEER_LINGER_S = 10  # a rank that lost the others waits this long for torchrun to see the rank that failed


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank on this machine: picks the GPU
    local_size: int = 1  # processes on this machine: share its cores
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_world = World()


def world() -> World:
    """This process's place in the group (a world of one outside torchrun)."""
    return _world


def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def env_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), readable before :func:`session`."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def timeout() -> timedelta:
    return timedelta(seconds=float(os.environ.get(TIMEOUT_ENV) or DEFAULT_TIMEOUT_S))


@contextlib.contextmanager
def session():
    """Join the torchrun group for the block, and leave it after; outside torchrun (or with one process), nothing.

    The backend follows the hardware: ``gloo`` without a GPU; with one, ``cpu:gloo,cuda:nccl`` (NCCL for the
    CUDA tensors of a run on the GPUs, gloo for the CPU tensors of a ``--device cpu`` run) and each local rank
    takes the GPU of its number. A collective that waits longer than :func:`timeout` fails instead of hanging.

    Leaving: see :func:`leave`; a process that was in a group then ends with :func:`end_torchrun_process`.
    """
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if not launched_by_torchrun() or size == 1:
        yield _world
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=timeout())
    _world = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank,
                   local_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(size))), backend=backend)
    try:
        yield _world
    finally:
        leave()


def leave() -> None:
    """Leave the group: destroy it (the run's collectives are all done: every way out of a run waits for the other
    ranks first, or has lost them).

    gloo's threads outlive this: once a DistributedDataParallel has been made on a group, ``destroy_process_group``
    no longer frees the group's gloo backend (torch 2.13 keeps a reference), so its worker threads (``pt_gloo_runloop``)
    and transport thread live on into the interpreter's finalization (seen in /proc: two ``pt_gloo_runloop`` and a
    ``gloo_tcp_loop`` after ``destroy_process_group``). A worker that lets go of a finished collective's tensors then
    must take the GIL to free their Python objects; Python 3.11 ends such a thread with ``pthread_exit``, whose
    unwinding through C++ ``noexcept`` code calls ``std::terminate``: "terminate called without an active exception",
    SIGABRT (the path PyTorch describes in pytorch/pytorch#179291). It takes a rank that exits right after its last
    collective (rank 1 at the end of a run, while rank 0 exported) and a worker held up by a busy core: rare.
    So, after destroying the group, this process lets go of the GIL for :data:`WORKERS_SETTLE_S`: a worker still
    holding a finished collective's tensors frees them now, while the interpreter is whole. And ``fer-train`` ends
    a torchrun worker with :func:`end_torchrun_process`, which does not finalize the interpreter at all."""
    global _world
    _world = World()
    with contextlib.suppress(RuntimeError, ValueError):  # a group that lost a rank is gone already
        dist.destroy_process_group()
    time.sleep(WORKERS_SETTLE_S)  # the GIL is free meanwhile


def end_torchrun_process(code: int, lost_peer: bool = False) -> None:
    """Under torchrun (more than one process), end this process with ``code``: its output flushed, the interpreter
    not finalized (see :func:`leave`); what the run writes is written and closed before. Otherwise return.

    A rank that ``lost_peer`` (another rank died) first waits, up to :data:`LOST_PEER_LINGER_S`, for torchrun to stop
    it: torchrun names the first failure it observes as the root cause, and that must be the rank that died, not this
    one leaving a moment after it."""
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if lost_peer:
        time.sleep(LOST_PEER_LINGER_S)
    os._exit(code)


def device_for(device: torch.device) -> torch.device:
    """The device this rank trains on: a CUDA run puts local rank k on GPU k."""
    if device.type == "cuda" and _world.distributed and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def default_threads() -> int:
    """CPU threads of one rank when ``--threads`` is not given: the machine's cores shared by its ranks."""
    return max(1, (os.cpu_count() or 1) // _world.local_size)


def check_global_batch(batch_size: int) -> None:
    """``--batch-size`` is the global batch; every rank takes an equal part of it."""
    if batch_size % _world.size:
        raise ValueError(f"--batch-size {batch_size} is the global batch and must divide among the {_world.size} processes; "
                         f"use a multiple of {_world.size} (e.g. {batch_size - batch_size % _world.size or _world.size})")


# ----------------------------------------------------------------------------------------------------
# the data each rank takes


def epoch_steps(n: int, batch_size: int) -> int:
    """Batches in an epoch of ``n`` images. A last, short batch is kept when every rank gets at least one image of
    it (on one process: always), else left out of this epoch (at most world size − 1 images, others every epoch)."""
    return n // batch_size + (n % batch_size >= _world.size)


def shard_bounds(n: int) -> tuple[int, int]:
    """This rank's consecutive part ``[start, end)`` of ``n`` items: equal parts, or as near as can be."""
    return n * _world.rank // _world.size, n * (_world.rank + 1) // _world.size


def shard(items: torch.Tensor) -> torch.Tensor:
    """This rank's part of a global batch (or of any sequence): disjoint from the other ranks', together all of it."""
    start, end = shard_bounds(len(items))
    return items[start:end]


def share_weight(local: int, total: int) -> float:
    """The factor of this rank's mean loss that makes DDP's average of the ranks' gradients the gradient of the mean
    over the whole batch: 1 when the ranks take equal parts, as in every full batch."""
    return local * _world.size / total


def rank_seed(seed: int) -> int:
    """The seed of this rank's own random numbers (augmentation, dropout). Rank 0 keeps ``seed``, so one process
    draws what it always did; the others' are mixed from the seed and the rank, apart from every epoch's seed."""
    if _world.rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, _world.rank]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------------------------------
# collectives (each is the plain value on one process)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` under DistributedDataParallel (gradients averaged over the ranks in ``backward``), or itself.

    DDP starts by sending rank 0's weights and buffers to every rank, so weights loaded on rank 0 alone (from
    ``--init-from``) reach them all; before every forward pass it sends rank 0's BatchNorm statistics."""
    if not _world.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_ranks(*values: torch.Tensor | float) -> list[float]:
    """The sums over every rank of a few numbers (counts, sums of losses), in float64, as Python floats."""
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    total = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if _world.distributed:
        dist.all_reduce(total)
    return total.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a stop asked for by a signal on one rank). A CPU tensor
    (gloo, also beside NCCL): asking never waits for a GPU."""
    if not _world.distributed:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if _world.distributed:
        dist.barrier()


LOST_PEER_SIGNS = ("gloo/transport", "Connection reset", "Connection closed", "NCCL", "timed out", "Timed out")


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank died or stopped answering (gloo raises
    a plain RuntimeError naming its transport; NCCL and timeouts a DistError)."""
    return _world.distributed and (isinstance(exc, dist.DistError) or
                                   (isinstance(exc, RuntimeError) and any(s in str(exc) for s in LOST_PEER_SIGNS)))


class FailedOnRank0(RuntimeError):
    """Raised on the other ranks when what rank 0 decides for them failed; rank 0 reports the error itself."""


def from_rank0(decide):
    """``decide()`` run on rank 0 alone, its result sent to every rank (pickled; tensors come back on the CPU).

    An exception on rank 0 is raised there and :class:`FailedOnRank0` on the others, so that no rank is left
    waiting for a result that will never come."""
    if not _world.distributed:
        return decide()
    box: list = [None]
    if _world.is_main:
        try:
            box[0] = ("ok", decide())
        except BaseException as exc:
            box[0] = ("error", f"{exc.__class__.__name__}: {exc}")
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise FailedOnRank0(f"rank 0 failed: {value}")
    return value


def gather_devices(device: torch.device) -> list[str]:
    """Every rank's device, in rank order: ``["cpu"]`` on one process, ``["host/cpu", "host/cpu", ...]`` under torchrun."""
    if not _world.distributed:
        return [str(device)]
    name = str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})"
    mine = f"{socket.gethostname()}/{name}"
    everyone: list = [None] * _world.size
    dist.all_gather_object(everyone, mine)
    return everyone


# ----------------------------------------------------------------------------------------------------
# rank 0 speaks for the group


class _QuietRank:
    """The reporter of a rank other than 0: progress, checkpoints and the run's events are rank 0's to give;
    this one only passes on errors, to stderr, naming its rank."""

    mode = "plain"

    def __init__(self, rank: int):
        self.rank = rank

    def emit(self, event: str, **fields) -> None:
        if event == EVENT_ERROR:
            print(f"rank {self.rank}: error: {fields.get('message')}", file=sys.stderr, flush=True)

    def batch(self, **fields) -> None:
        pass

    def end_epoch_bar(self) -> None:
        pass

    def close(self) -> None:
        pass


def rank_reporter(reporter, rank: int | None = None):
    """``reporter`` on rank 0 (or on one process); a reporter that only reports errors on the other ranks."""
    rank = _world.rank if rank is None else rank
    return reporter if rank == 0 or isinstance(reporter, _QuietRank) else _QuietRank(rank)

"""Training on several processes (torchrun, DDP over gloo on the CPU): the same weights as one process, a stop
on one rank stops all of them and ``--resume`` finishes the run, a killed rank does not leave the others hanging.

Each test starts two processes that import torch (several seconds each on a small machine): they are slow.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from fer_train import distributed
from fer_train.checkpoint import load_checkpoint
from fer_train.config import TrainConfig
from fer_train.progress import Reporter
from fer_train.train import train

from cli_support import child_processes

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")


def _config(demo_csv, **kw) -> TrainConfig:
    # no dropout and no augmentation: the ranks' own random numbers do not enter, so one process and two agree.
    # 99 images: three full batches of 32 and a last one of 3, which the ranks share unequally (1 and 2).
    # SGD, whose step is linear in the gradient (Adam's divides by its root mean square, which magnifies rounding)
    base = dict(model="dnn", model_kwargs={"dropout": 0.0}, data=str(demo_csv), epochs=2, batch_size=32, limit_train=99,
                limit_val=40, augment=False, optimizer="sgd", threads=1)
    return TrainConfig.from_recipe("study", **{**base, **kw})  # the study's recipe: no schedule, no flips or erasing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, config: TrainConfig, run_dir: str) -> None:
    """One rank of a group started by torch.multiprocessing, with the environment torchrun would give it."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with distributed.session():
        train(config, run_dir, Reporter("plain", stream=io.StringIO()), export=False)


@pytest.mark.slow
def test_two_ranks_with_half_the_batch_reach_the_weights_of_one_process_with_all_of_it(demo_csv, tmp_path, one_torch_thread):
    config = _config(demo_csv)
    one = train(config, tmp_path / "one", Reporter("plain", stream=io.StringIO()), export=False)
    torch.multiprocessing.start_processes(_rank, args=(2, _free_port(), config, str(tmp_path / "two")), nprocs=2, start_method="spawn")

    a = load_checkpoint(one.run_dir, "last")
    b = load_checkpoint(tmp_path / "two", "last")
    assert b["epoch"] == 2 and b["config"]["world_size"] == 2 and b["training"]["world_size"] == 2
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2
    for name, weight in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], weight, atol=1e-6, rtol=1e-5, msg=f"{name} differs")  # steps of ~1e-2
    # validation is shared out and summed: the same numbers as one process scoring every image
    for mine, theirs in zip(a["history"], b["history"]):
        assert theirs["val_loss"] == pytest.approx(mine["val_loss"], abs=1e-4)
        assert theirs["train_loss"] == pytest.approx(mine["train_loss"], abs=1e-4)
        assert theirs["train_acc"] == pytest.approx(mine["train_acc"], abs=0.02)  # a near-tie may fall either way


def test_the_ranks_shares_of_a_batch_are_disjoint_and_cover_it(monkeypatch):
    batch = torch.arange(35)
    parts = []
    for rank in range(4):
        monkeypatch.setattr(distributed, "_world", distributed.World(rank=rank, size=4))
        parts.append(distributed.shard(batch))
        assert distributed.share_weight(len(parts[-1]), len(batch)) == pytest.approx(len(parts[-1]) * 4 / 35)
    assert torch.equal(torch.cat(parts), batch) and {len(p) for p in parts} == {8, 9}
    assert distributed.epoch_steps(99, 32) == 3  # a last batch of 3 cannot give each of 4 ranks an image
    with pytest.raises(ValueError, match="global batch"):
        distributed.check_global_batch(30)


# ----------------------------------------------------------------------------------------------------
# torchrun itself


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fer_train", *args,
            "--progress", "json"]


def _worker_of_rank(launcher: int, rank: int) -> int:
    for pid in child_processes(launcher, "fer_train"):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no worker of rank {rank} under torchrun {launcher}")


def _signal_rank_after_first_epoch(args: list[str], rank: int, sig: int, wait_s: float = 120) -> tuple[int, list[dict], str, float]:
    """Run torchrun, send ``sig`` to the worker of ``rank`` once rank 0 reports its first epoch; the exit code, the
    JSON events, torchrun's stderr and the seconds from the signal to the exit."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(_torchrun(args), stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        events = []
        try:
            for line in proc.stdout:
                events.append(json.loads(line))
                if events[-1]["event"] == "epoch":
                    break
            os.kill(_worker_of_rank(proc.pid, rank), sig)
            sent = time.monotonic()
            events += [json.loads(line) for line in proc.stdout]
            code = proc.wait(timeout=wait_s)
            seconds = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        return code, events, err.read(), seconds


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_at_an_epoch_and_resume_finishes(demo_csv, tmp_path):
    run = tmp_path / "run"
    args = ["--data", str(demo_csv), "--model", "dnn", "--epochs", "3", "--batch-size", "32", "--limit-train", "128",
            "--limit-val", "40", "--threads", "1", "--run-dir", str(run)]
    code, events, err, _ = _signal_rank_after_first_epoch(args, rank=1, sig=signal.SIGTERM)
    assert code != 0, err
    stopped = events[-1]
    assert stopped["event"] == "interrupted" and 1 <= stopped["epoch"] < 3, events[-3:]
    assert load_checkpoint(run, "last")["epoch"] == stopped["epoch"]

    resumed = subprocess.run(_torchrun(["--resume", str(run)]), check=False, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert done[0]["event"] == "start" and done[0]["start_epoch"] == stopped["epoch"] + 1 and done[0]["world_size"] == 2
    assert done[-1]["event"] == "done"
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2, 3]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # one run folder, named by rank 0 for both

    from fer_runtime.classifier import load_classifier
    from fer_runtime.contract import META_EXTRA

    training = load_classifier(run / "model.onnx").metadata[META_EXTRA]["training"]
    assert training["world_size"] == 2 and len(training["devices"]) == 2 and training["backend"] == "gloo"


@pytest.mark.slow
def test_a_killed_rank_ends_the_group_with_its_rank_named(demo_csv, tmp_path):
    args = ["--data", str(demo_csv), "--model", "dnn", "--epochs", "50", "--batch-size", "32", "--limit-train", "128",
            "--limit-val", "40", "--threads", "1", "--no-export", "--run-dir", str(tmp_path / "run")]
    code, events, err, seconds = _signal_rank_after_first_epoch(args, rank=1, sig=signal.SIGKILL, wait_s=90)
    assert code != 0
    assert seconds < 60, f"the group took {seconds:.0f} s to end"
    # torchrun's report: the first failure was rank 1, killed
    root_cause = err.split("Root Cause")[-1]
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", root_cause) and "SIGKILL" in root_cause, err[-3000:]
    # and rank 0 says why it stopped rather than leaving a traceback
    assert events[-1]["event"] == "error" and "lost the other processes" in events[-1]["message"], events[-3:]


def test_semi_and_a_batch_the_ranks_cannot_share_are_refused_under_torchrun(monkeypatch):
    from fer_train.train_cli import _plan_run, _train_parser

    monkeypatch.setattr(distributed, "_world", distributed.World(rank=0, size=2))  # what rank 0 of two sees
    for argv, problem in ((["--semi"], "--semi: not under torchrun"), (["--batch-size", "63"], "global batch")):
        with pytest.raises(ValueError, match=problem):
            _plan_run(_train_parser().parse_args(argv), argv)

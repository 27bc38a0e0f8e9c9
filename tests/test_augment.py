"""Batch augmentation: random erasing erases one clipped noise rectangle per chosen image, seeded, and nothing else."""

from __future__ import annotations

import pytest
import torch

from fer_train.augment import random_erase
from fer_train.checkpoint import load_checkpoint
from fer_train.cli import main as cli_main
from fer_train.config import TrainConfig
from fer_train.progress import Reporter
from fer_train.train import train

MARK = -1.0  # outside the noise's 0..255, so every erased pixel shows


def _erased(n: int, p: float, seed: int = 0) -> torch.Tensor:
    x = torch.full((n, 1, 48, 48), MARK)
    return random_erase(x, torch.Generator().manual_seed(seed), p) != MARK  # (N, 1, H, W) erased pixels


def test_every_chosen_image_loses_one_rectangle_of_the_asked_size():
    erased = _erased(300, p=1.0)[:, 0]
    for mask in erased:
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and int(mask.sum()) == box.numel()  # one solid axis-aligned rectangle, nothing outside it
        assert 1 <= int(mask.sum()) <= 0.25 * 48 * 48 * 1.15  # at most a quarter (+ rounding of the sides)
    areas = erased.flatten(1).float().mean(1)
    assert 0.08 < float(areas.mean()) < 0.16  # areas uniform over 2-25 %, less some clipping at tall or wide ratios
    tops = torch.stack([m.any(1).nonzero()[0, 0] for m in erased])
    assert int(tops.min()) == 0 and int(tops.max()) > 30  # positions spread over the image


def test_erasing_probability_and_seed():
    chosen = _erased(1000, p=0.3).flatten(1).any(1).float().mean()
    assert 0.25 < float(chosen) < 0.35
    assert not _erased(50, p=0.0).any()
    assert torch.equal(_erased(50, p=0.5, seed=3), _erased(50, p=0.5, seed=3))
    assert not torch.equal(_erased(50, p=0.5, seed=3), _erased(50, p=0.5, seed=4))


def test_erase_reaches_training_and_is_checked(demo_csv, tmp_path):
    base = dict(model="dnn", data=str(demo_csv), epochs=1, batch_size=32, limit_train=96, limit_val=48, threads=1)
    plain = train(TrainConfig(**base), tmp_path / "plain", Reporter("plain"), export=False)
    erased = train(TrainConfig(**base, erase=1.0), tmp_path / "erased", Reporter("plain"), export=False)
    a, b = (load_checkpoint(r.run_dir, "last")["state_dict"] for r in (plain, erased))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same seed, so only the erasing tells them apart
    assert load_checkpoint(erased.run_dir, "last")["config"]["erase"] == 1.0
    with pytest.raises(ValueError, match="erase is a probability, from 0 to 1, got 1.5"):
        TrainConfig(erase=1.5)
    assert cli_main(["--data", str(demo_csv), "--erase", "2", "--no-export", "--run-dir", str(tmp_path / "bad")]) != 0

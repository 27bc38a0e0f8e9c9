"""Batch augmentation: random erasing erases one clipped noise rectangle per chosen image, seeded, and nothing else;
the zoom of ``random_affine`` grows and shrinks the face within its range, and leaves the other draws alone when off."""

from __future__ import annotations

import pytest
import torch

from fer_train.augment import random_affine, random_erase
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


def _square(n: int) -> torch.Tensor:
    x = torch.zeros(n, 1, 48, 48)
    x[:, :, 16:32, 16:32] = 255.0  # a centred 16 x 16 square
    return x


def test_zoom_grows_and_shrinks_the_face_within_its_range():
    zoomed = random_affine(_square(400), torch.Generator().manual_seed(0), rotation=0, shift=0, scale=0.3)
    sides = (zoomed[:, 0] > 127.5).flatten(1).sum(1).float().sqrt()  # the bright square's side after the zoom
    assert float(sides.min()) >= 16 * 0.7 - 1.5 and float(sides.max()) <= 16 * 1.3 + 1.5
    assert float(sides.min()) < 13 and float(sides.max()) > 19  # both ways, spread over the range
    assert abs(float(sides.mean()) - 16) < 1.0  # centred on no zoom
    centres = (zoomed[:, 0] > 127.5).float().nonzero()[:, 1:].float().mean(0)
    assert torch.allclose(centres, torch.tensor([23.5, 23.5]), atol=0.6)  # about the image centre, not a corner


def test_zoom_off_draws_what_it_drew_before():
    x = _square(64) + torch.rand(64, 1, 48, 48) * 50
    plain = random_affine(x, torch.Generator().manual_seed(5), 15, 0.1, flip=True)
    off = random_affine(x, torch.Generator().manual_seed(5), 15, 0.1, flip=True, scale=0.0)
    on = random_affine(x, torch.Generator().manual_seed(5), 15, 0.1, flip=True, scale=0.2)
    assert torch.equal(plain, off)  # seeded runs made before --scale existed still repeat exactly
    assert not torch.allclose(plain, on)
    with pytest.raises(ValueError, match="scale is the zoom range"):
        TrainConfig(scale=1.0)


def test_scale_and_fast_reach_the_run(demo_csv, tmp_path, capsys, monkeypatch):
    """--scale is recorded and trains; --fast times the paths this CPU has, trains on the fastest and records it,
    and a resumed run keeps it."""
    import json

    from fer_train import speed
    from fer_train.devices import bf16_supported

    timed = []
    fake_rates = {(False, True): 100.0, (True, False): 300.0, (True, True): 200.0}

    def fake_rate(config, device, bf16, channels_last):
        timed.append((bf16, channels_last))
        assert config.model == "fernet" and config.scale == 0.2  # the run's own model and augmentation
        return fake_rates[bf16, channels_last]

    monkeypatch.setattr(speed, "images_per_second", fake_rate)
    run = tmp_path / "fast"
    args = ["--data", str(demo_csv), "--model", "fernet", "--epochs", "1", "--limit-train", "64", "--limit-val", "32",
            "--scale", "0.2", "--fast", "--schedule", "none", "--threads", "1", "--no-export", "--progress", "plain", "--run-dir", str(run)]
    assert cli_main(args) == 0
    has_bf16 = bf16_supported(torch.device("cpu"))
    assert timed == ([(False, True), (True, False), (True, True)] if has_bf16 else [(False, True)])
    config = json.loads((run / "config.json").read_text())
    assert config["scale"] == 0.2
    assert (config["bf16"], config["channels_last"]) == ((True, False) if has_bf16 else (False, True))
    assert "--fast: " + ("bf16 (" if has_bf16 else "float32 + channels-last (") in capsys.readouterr().err
    timed.clear()
    assert cli_main(["--resume", str(run), "--epochs", "2", "--fast", "--no-export", "--progress", "plain"]) == 0
    assert timed == [] and json.loads((run / "config.json").read_text())["bf16"] == config["bf16"]  # kept, not timed again
    assert cli_main(["--data", str(demo_csv), "--scale", "1.5", "--no-export", "--run-dir", str(tmp_path / "bad")]) != 0


def test_fast_times_real_steps_of_each_path():
    from fer_train import speed

    config = TrainConfig(model="dnn", batch_size=16, augment=False)
    chosen, rates = speed.fastest_path(config, torch.device("cpu"))
    assert set(rates) == {speed.describe(*p) for p in speed.candidate_paths(torch.device("cpu"))}
    assert all(rate > 0 for rate in rates.values())
    assert speed.describe(chosen.bf16, chosen.channels_last) == max(rates, key=rates.get)
    assert chosen.model == "dnn" and chosen.batch_size == 16  # only the path changes

"""The published recipes' parts (issue 34): random crops, mixup, a moving average of the weights, wider fernets."""

from __future__ import annotations

import pytest
import torch

from fer_train.augment import mix_batch, random_crop
from fer_train.checkpoint import load_checkpoint
from fer_train.config import TrainConfig
from fer_train.models import create_model, deployable
from fer_train.progress import Reporter
from fer_train.train import train

from cli_support import planned_config


def _config(demo_csv, **kw):
    base = dict(model="fernet", model_kwargs={"widths": [8, 16, 16, 32]}, data=str(demo_csv), epochs=2, batch_size=32,
                limit_train=96, limit_val=48, threads=1)
    return TrainConfig.from_recipe("default", **{**base, "fast": False, **kw})


def test_random_crop_takes_a_window_of_each_image_at_its_own_place():
    x = torch.arange(6 * 48 * 48, dtype=torch.float32).reshape(6, 1, 48, 48)
    crops = random_crop(x, torch.Generator().manual_seed(3), 40)
    assert crops.shape == (6, 1, 40, 40)
    places = set()
    for image, crop in zip(x, crops):
        top, left = divmod(int(crop[0, 0, 0] - image[0, 0, 0]), 48)
        assert 0 <= top <= 8 and 0 <= left <= 8
        assert torch.equal(crop, image[:, top:top + 40, left:left + 40])
        places.add((top, left))
    assert len(places) > 1  # not one offset for the whole batch
    again = random_crop(x, torch.Generator().manual_seed(3), 40)
    assert torch.equal(crops, again)  # seeded: a resumed run draws the same crops


def test_mixup_mixes_each_image_with_another_of_the_batch_by_one_lambda():
    x = torch.rand(16, 1, 48, 48) * 255
    mixed, perm, lam = mix_batch(x, torch.Generator().manual_seed(0), alpha=0.4)
    assert 0.0 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(16))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    lams = {round(mix_batch(x, torch.Generator().manual_seed(s), 0.4)[2], 6) for s in range(8)}
    assert len(lams) > 4  # λ is drawn, not fixed


def test_a_crop_model_sees_the_centre_of_a_full_face_and_exports_so():
    torch.manual_seed(0)
    model = create_model("fernet", widths=[8, 16, 16, 32], input_size=40).eval()
    face = torch.rand(3, 1, 48, 48) * 255
    centre = face[:, :, 4:44, 4:44]
    with torch.no_grad():
        assert torch.allclose(model(face), model(centre))
        assert torch.allclose(deployable(model)(face), model(centre), atol=1e-4)  # the folded chain crops too


def test_crop_needs_a_model_that_takes_an_input_size(tmp_path):
    with pytest.raises(ValueError, match="model 'cnn' cannot be made"):
        create_model("cnn", input_size=40)
    with pytest.raises(ValueError, match="--crop"):
        TrainConfig(model="fernet", crop=50)


@pytest.mark.parametrize("argv, message", [(["--ema", "1"], "--ema"), (["--mixup", "-1"], "--mixup"),
                                           (["--crop", "4", "--model", "fernet"], "--crop"),
                                           (["--semi", "--ema", "0.99"], "not --semi")])
def test_recipe_flags_are_checked_before_anything_runs(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        planned_config(tmp_path / "run", argv)


def test_widths_and_crop_reach_the_model(tmp_path):
    config = planned_config(tmp_path / "run", ["--model", "fernet", "--widths", "48,96,192,384", "--crop", "40"])
    assert config.model_kwargs == {"widths": [48, 96, 192, 384], "input_size": 40}
    model = create_model(config.model, **config.model_kwargs)
    assert model.classifier[-1].in_features == 384


def test_ema_is_kept_in_best_and_resumes_to_the_same_weights(demo_csv, tmp_path):
    kw = dict(ema=0.9, mixup=0.4, crop=40, schedule="none")  # a schedule is sized for its epochs: none, to stop after one
    straight = train(_config(demo_csv, **kw), tmp_path / "a", Reporter("plain"), export=False)
    half = train(_config(demo_csv, **{**kw, "epochs": 1}), tmp_path / "b", Reporter("plain"), export=False)
    last, best = load_checkpoint(half.run_dir, "last"), load_checkpoint(half.run_dir, "best")  # after epoch 1, its best
    ema_weights = {k.removeprefix("module."): v for k, v in last["ema"].items() if k.startswith("module.")}
    for key, value in best["state_dict"].items():  # best.pt holds the average, last.pt the trained weights
        assert torch.equal(value, ema_weights[key]), key
    assert any(not torch.equal(last["state_dict"][k], best["state_dict"][k]) for k in best["state_dict"])
    assert all("val_acc_raw" in h and 0 <= h["val_acc_raw"] <= 1 for h in half.history)

    resumed = train(_config(demo_csv, **kw), tmp_path / "b", Reporter("plain"), resume=True, export=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a, b = (load_checkpoint(r.run_dir, "last") for r in (straight, resumed))
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key

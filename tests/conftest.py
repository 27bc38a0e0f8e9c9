"""Shared fixtures: small generated data for the tests that always run, the real FER2013 when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fer_runtime.contract import DATA_ENV_VAR
from fer_runtime.synthetic import make_faces, write_demo_csv

REPO = Path(__file__).resolve().parent.parent


def real_data_path() -> Path | None:
    env = os.environ.get(DATA_ENV_VAR)
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "fer2013" / "fer2013.csv.gz")
    return next((p for p in candidates if p.exists()), None)


@pytest.fixture(scope="session")
def real_data() -> Path:
    path = real_data_path()
    if path is None:
        pytest.skip(f"real FER2013 not found: set {DATA_ENV_VAR} or place it at ../shared/data/fer2013/fer2013.csv.gz")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Data caches of generated files go to a temporary folder, never the user's ~/.cache."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fer-cache"))
    # stored predictions are per test: a test sees what the app computes, never what an earlier test left
    import fer_tui.predictions

    folder = tmp_path_factory.mktemp("predictions")
    monkeypatch.setattr(fer_tui.predictions, "default_folder", lambda: folder)


@pytest.fixture(scope="session")
def demo_csv(tmp_path_factory) -> Path:
    """A Kaggle-format CSV of 350 Training and 140 PublicTest drawn faces."""
    path = tmp_path_factory.mktemp("data") / "demo.csv"
    write_demo_csv(path, n_train=350, n_test=140, seed=0)
    return path


@pytest.fixture
def faces() -> tuple[np.ndarray, np.ndarray]:
    return make_faces(70, seed=5)


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the machine is small and shared); restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def random_slope_cnn():
    """An untrained study CNN in eval mode whose PReLU slopes are random (not Keras' zeros), so every
    branch of the backward pass is exercised. Seeded: the same weights every time."""
    import torch

    from fer_train.models import ElementPReLU, create_model

    torch.manual_seed(0)
    model = create_model("cnn").eval()
    for m in model.modules():
        if isinstance(m, ElementPReLU):
            m.weight.data.uniform_(-0.3, 0.3)
    return model


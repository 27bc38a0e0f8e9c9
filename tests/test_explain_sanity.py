"""Sanity checks (Adebayo et al. 2018) in the tests: a small model trained here on the drawn faces; the maps of the
default method must change when its weights are randomised and when it is trained on shuffled labels, while a
map that only shows the input (the face's own edges) does not change and fails the same check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fer_runtime.explain import DEFAULT_METHOD, rank_correlation
from fer_runtime.synthetic import make_faces
from fer_train.explain.sanity import map_correlations, randomised_weights, train_small

THRESHOLD = 0.5  # a mean rank correlation above this: the map did not change enough to be about the model



def _train(labels_seed: int | None) -> nn.Module:
    """The small CNN trained on 210 drawn faces; ``labels_seed``: the labels shuffled by it."""
    torch.set_num_threads(1)  # the machine is small and shared (module fixtures run before the one_torch_thread fixture)
    images, labels = make_faces(210, seed=3)
    if labels_seed is not None:
        labels = np.random.default_rng(labels_seed).permutation(labels)
    return train_small(images, labels, epochs=10)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    yield _train(None)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def faces():
    return make_faces(14, seed=99)[0].astype(np.float32)  # two of each class


def test_the_small_model_learned_the_drawn_faces(trained):
    images, labels = make_faces(70, seed=7)
    with torch.no_grad():
        predicted = trained(torch.from_numpy(images[:, None].astype(np.float32))).argmax(1).numpy()
    assert (predicted == labels).mean() > 0.8


def test_rank_correlation_is_spearmans():
    rng = np.random.default_rng(0)
    a = rng.random((2, 48, 48))
    assert np.allclose(rank_correlation(a, a), 1) and np.allclose(rank_correlation(a, -a), 1)  # magnitudes are compared
    assert np.allclose(rank_correlation(a, 1 - a), -1)
    assert abs(rank_correlation(a, rng.random((2, 48, 48)))).max() < 0.1
    assert rank_correlation(a, np.zeros_like(a)).tolist() == [0.0, 0.0]  # a flat map is no ranking


def test_the_default_method_passes_both_checks_and_an_edge_detector_fails_them(trained, faces):
    randomised = map_correlations(trained, randomised_weights(trained), faces, methods=(DEFAULT_METHOD, "gradient"))
    shuffled = map_correlations(trained, _train(labels_seed=1), faces, methods=(DEFAULT_METHOD,))
    assert randomised[DEFAULT_METHOD].mean() < THRESHOLD, randomised[DEFAULT_METHOD]
    assert shuffled[DEFAULT_METHOD].mean() < THRESHOLD, shuffled[DEFAULT_METHOD]

    # the control: a "map" that is the face's own edges is the same for both models, whatever they learned
    edges = np.abs(np.gradient(faces, axis=2)) + np.abs(np.gradient(faces, axis=1))
    assert rank_correlation(edges, edges + 1e-3).mean() > THRESHOLD

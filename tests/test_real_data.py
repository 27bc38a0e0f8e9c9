"""The shared FER2013: exact row and class counts per split. Skipped, with the reason, when absent."""

import numpy as np
import pytest

from fer_runtime.io import load_source
from fer_runtime.splits import make_splits

pytestmark = pytest.mark.real_data

TRAINING = [3995, 436, 4097, 7215, 4830, 3171, 4965]
PUBLIC_TEST = [467, 56, 496, 895, 653, 415, 607]


def test_real_fer2013_counts(real_data):
    source = load_source(real_data)
    assert source.format == "kaggle" and list(source.splits) == ["Training", "PublicTest"]
    assert not source.skipped
    assert len(source.splits["Training"]) == 28_709 and len(source.splits["PublicTest"]) == 3_589
    np.testing.assert_array_equal(source.splits["Training"].class_counts(), TRAINING)
    np.testing.assert_array_equal(source.splits["PublicTest"].class_counts(), PUBLIC_TEST)
    # data row n of the file is line n + 2 (the header is line 1); PublicTest starts at row 28,709
    assert source.splits["PublicTest"].origin[0] == 28_709 + 2


def test_real_fer2013_study_protocol(real_data):
    splits = make_splits(load_source(real_data), val_fraction=0.1, seed=0)
    assert len(splits.train) == 25_837 and len(splits.val) == 2_872 and len(splits.test) == 3_589
    np.testing.assert_array_equal(splits.val.class_counts(), [400, 44, 410, 722, 483, 317, 496])
    assert len(np.intersect1d(splits.train.origin, splits.val.origin)) == 0
    assert splits.private_test is None  # this copy holds no PrivateTest rows

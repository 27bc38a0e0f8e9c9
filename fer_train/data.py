"""A run's data: the FER2013 source split by the study's protocol, cut short for smoke runs."""

from __future__ import annotations

import numpy as np

from fer_runtime.io import DataError, default_data_path, load_source
from fer_runtime.splits import Splits, make_splits

from .config import TrainConfig


def load_splits(config: TrainConfig) -> Splits:
    """The run's data, by the study's protocol, cut to ``limit_train``/``limit_val`` for smoke runs."""
    path = config.data or default_data_path()
    if path is None:
        raise DataError("<no data>", "no data given and none found; pass --data PATH (FER2013 CSV or image folder) or set FER_DATA")
    source = load_source(path, skip_bad=config.skip_bad)
    splits = make_splits(source, val_fraction=config.val_fraction, seed=config.seed)
    if config.limit_train:
        splits.train = splits.train.subset(np.arange(min(config.limit_train, len(splits.train))))
    if config.limit_val:
        splits.val = splits.val.subset(np.arange(min(config.limit_val, len(splits.val))))
        if splits.test is not None:
            splits.test = splits.test.subset(np.arange(min(config.limit_val, len(splits.test))))
    return splits

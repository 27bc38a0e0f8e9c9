"""Small messages between the views, their workers and the app (all dataclasses; handlers are ``on_<name>``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.message import Message

from .catalog import ModelEntry
from .data import DataSet
from .predictions import Predictions


# -- views → app -----------------------------------------------------------------------------------


@dataclass
class FaceSelected(Message):
    """Browse moved to another face (an index into the split), or to none."""

    index: int | None


@dataclass
class StepFace(Message):
    """Move the selection to the next (+1) or previous (-1) face of Browse's list."""

    delta: int


@dataclass
class BrowseCell(Message):
    """Open Browse filtered to one confusion cell: true class ``true``, predicted ``predicted``."""

    true: int
    predicted: int


@dataclass
class ActivateModel(Message):
    path: Path


@dataclass
class ModelExported(Message):
    """A training job exported this model: load it and list it."""

    path: Path


# -- app workers → app -----------------------------------------------------------------------------


@dataclass
class DataProgress(Message):
    """Reading the data: ``done`` of ``total`` photos searched for faces (``name`` the last one)."""

    done: int
    total: int
    name: str = ""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DataProgress)


@dataclass
class DataLoaded(Message):
    dataset: DataSet
    error: str | None = None


@dataclass
class ModelsLoaded(Message):
    """Models found and loaded (or not: each entry says why); if none is active, the app opens one (``catalog.opening_model``)."""

    entries: list[ModelEntry]


@dataclass
class PredictProgress(Message):
    model_key: tuple
    split_name: str
    done: int
    total: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, PredictProgress) and (message.model_key, message.split_name) == (self.model_key, self.split_name)


@dataclass
class PredictionsReady(Message):
    predictions: Predictions


@dataclass
class PredictFailed(Message):
    model_key: tuple
    split_name: str
    message: str

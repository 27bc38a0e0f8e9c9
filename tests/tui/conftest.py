"""Fixtures of the TUI tests. Real models come from a real fer-train job in test_app; the rest use template models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_support import template_gradient, template_model


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory) -> Path:
    """A folder ``exported/`` holding ``template.onnx`` and its gradient graph ``template.grad.onnx``."""
    folder = tmp_path_factory.mktemp("tui") / "exported"
    template_model(folder / "template.onnx")
    template_gradient(folder / "template.grad.onnx")
    return folder

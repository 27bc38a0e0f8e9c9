"""fer_tui: a Textual terminal UI over exported fer models (onnxruntime, no torch).

Pure logic (rendering arrays to terminal cells, saliency, prediction caching, the training job's
process and event stream) lives in modules that import neither textual nor torch; the widgets live in
``fer_tui.views``; ``fer_tui.app`` wires them together. A training job imports ``fer_train`` (and torch)
only inside its own process.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

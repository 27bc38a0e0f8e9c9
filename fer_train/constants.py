"""Facts about FER2013 that every part of the project shares.

This module imports nothing heavy: the torch-free TUI and the data readers use it too.
"""

CLASS_NAMES: tuple[str, ...] = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 48  # FER2013 faces are 48×48 grayscale
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE

# The names of fer_train.models' registry, for code that must not import torch (the TUI's Train form).
# tests/test_models.py checks that they match the registry.
MODEL_NAMES: tuple[str, ...] = ("cnn", "dnn", "fernet")

# Where the shared copy of the real data lives, relative to a checkout; FER_DATA overrides it.
DATA_ENV_VAR = "FER_DATA"
DEFAULT_DATA_RELATIVE = "../shared/data/fer2013/fer2013.csv.gz"

# The ONNX contract between fer_train and fer_tui.
ONNX_INPUT = "image"  # float32 [N, 1, 48, 48], raw pixel values 0..255
ONNX_OUTPUT = "logits"  # float32 [N, 7]

"""The export contract: every fact and string that crosses from one package to another, defined once.

``fer_train`` writes ONNX files, companion graphs and JSON progress lines; ``fer_runtime`` and ``fer_tui``
read them. Both sides import the names below, so a key renamed here is renamed everywhere. This module
imports nothing: anything may import it. ``docs/contract.md`` describes each item for people.
"""

# -- FER2013 -----------------------------------------------------------------------------------------

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

# -- the model graph ---------------------------------------------------------------------------------

MODEL_SUFFIX = ".onnx"
ONNX_INPUT = "image"  # float32 [N, 1, 48, 48], raw pixel values 0..255
ONNX_OUTPUT = "logits"  # float32 [N, 7]

# -- metadata keys (values are JSON text) ------------------------------------------------------------

META_CLASS_NAMES = "class_names"  # list of the K class names, in logit order
META_ARCHITECTURE = "architecture"  # registry name: cnn, dnn, fernet
META_PARAMETERS = "parameter_count"
META_METRICS = "metrics"  # {"val": {...}, "test": {...}} from fer_runtime.metrics.split_metrics
METRICS_VAL = "val"  # the validation split's metrics: what models are chosen and ranked by
METRICS_TEST = "test"  # PublicTest's: reported, never tuned on
METRIC_ACCURACY = "accuracy"  # inside a split's metrics, a fraction 0..1
META_CONFIG = "train_config"  # the run's TrainConfig as a dict
META_VERSION = "fer_version"
META_INPUT = "input"  # what the input expects, in words and numbers
META_EXTRA = "training"  # how training went: epochs, best epoch, hardware, world size, ...
# written by fer-train optimize on a variant
META_VARIANT = "variant"  # fp32-fast, int8, fp32-flip-average, fp32-tta, fp32-ensemble or fp32-ensemble-flip-average
META_FP32_TEST_ACCURACY = "fp32_test_accuracy"
META_VARIANT_TEST_ACCURACY = "variant_test_accuracy"
META_OPTIMIZATION = "optimization"  # the steps taken, the gate's verdict, the source file's hash
META_FP32_METRICS = "fp32_metrics"  # the source model's metrics, beside the variant's own
# written on every explanation graph
META_KIND = "explain_kind"  # gradient, layers, filters or gradcam
META_OF = "explain_of"  # the model's file name
META_LAYERS = "explain_layers"  # [{name, module, channels, height, width, window}] per conv layer
META_LAYER = "explain_layer"  # filters graphs: which layer
META_CAM_LAYERS = "explain_cam_layers"  # gradcam graphs: [{name, module, channels, height, width, window, role}], role middle or last;
# window [offset, side]: the square of the 48-pixel face the layer sees ([4, 40] for a model trained on 40-pixel crops)

# -- companion files beside <stem>.onnx --------------------------------------------------------------

GRADIENT_SUFFIX = ".grad.onnx"  # inputs image, class_index → outputs logits, gradient
LAYERS_SUFFIX = ".layers.onnx"  # input image → outputs conv1 … convL
GRADCAM_SUFFIX = ".gradcam.onnx"  # inputs image, class_index → logits, activation_<layer>, gradient_<layer> per layer
FILTERS_INFIX = ".filters."  # <stem>.filters.<layer>.onnx: inputs image, filter_index → activation, gradient
WEIGHTS_SUFFIX = ".weights"  # <stem>.weights: the tensors that a model's graphs share (ONNX external data)
WEIGHTS_MIN_BYTES = 1024  # tensors of fewer bytes stay inside their graph
WEIGHTS_ALIGNMENT = 64  # every tensor in <stem>.weights starts at a multiple of this many bytes
TEMP_MODEL_SUFFIX = ".tmp.onnx"  # a graph being written and checked, never part of a model's family
PREDICTIONS_SUFFIX = ".predictions.npz"  # <stem>.predictions.npz: predictions recorded at export (fer_runtime.recorded_predictions)
# Variants <stem>.<variant>.onnx share their base model's companions (an ensemble: its first member's).
VARIANT_NAMES: tuple[str, ...] = ("fast", "int8", "tta", "ensemble")
# the companions' extra inputs and outputs
CLASS_INDEX = "class_index"  # int64 [N]
FILTER_INDEX = "filter_index"  # int64 [N]
GRADIENT = "gradient"  # float32 [N, 1, 48, 48]
ACTIVATION = "activation"  # float32 [N]
CAM_ACTIVATION_PREFIX = "activation_"  # gradcam graphs: activation_<layer> float32 [N, C, H, W], the layer's activated output
CAM_GRADIENT_PREFIX = "gradient_"  # gradcam graphs: gradient_<layer> float32 [N, C, H, W] = d logit[class] / d activation

# -- the JSON progress stream of `fer-train --progress json` -----------------------------------------
# One object per line, {"event": <name>, "time": <unix seconds>, ...fields}.

EVENT_KEY = "event"
EVENT_TIME = "time"
EVENT_START = "start"
EVENT_BATCH = "batch"
EVENT_EPOCH = "epoch"
EVENT_ARM = "arm"
EVENT_ROUND = "round"
EVENT_MESSAGE = "message"
EVENT_EXPORTED = "exported"
EVENT_DONE = "done"
EVENT_INTERRUPTED = "interrupted"
EVENT_ERROR = "error"
EVENTS: tuple[str, ...] = (EVENT_START, EVENT_BATCH, EVENT_EPOCH, EVENT_ARM, EVENT_ROUND, EVENT_MESSAGE, EVENT_EXPORTED,
                           EVENT_DONE, EVENT_INTERRUPTED, EVENT_ERROR)

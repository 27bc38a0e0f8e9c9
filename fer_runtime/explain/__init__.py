"""Explanations with onnxruntime and numpy only: saliency, filter visualisation, layer outputs.

- :mod:`.companions` — where a model's explanation graphs live;
- :mod:`.images` — batches, blur, maps scaled to 0..1, masked faces, filter pictures;
- :mod:`.saliency` — SmoothGrad, integrated gradients and occlusion over plain functions (any backend);
- :mod:`.gradcam` — Grad-CAM from feature maps and their gradients;
- :mod:`.methods` — the methods with their settings, the default chosen by measurement, one map function;
- :mod:`.faithfulness` — deletion and insertion curves: how faithful a map is;
- :mod:`.sanity` — the rank correlation of the sanity checks;
- :mod:`.heatmap` — a map as a picture: colour over the dimmed face, and its legend;
- :mod:`.ascent` — gradient ascent on filters;
- :mod:`.explainer` — :class:`Explainer`: all of it for one model file in onnxruntime.

Torch-free, like :mod:`fer_runtime.classifier`: the TUI runs everything here. The algorithms (SmoothGrad,
occlusion, gradient ascent) take plain functions, so ``fer_train.explain`` runs the very same code with
torch autograd behind those functions. This is the project's one implementation of saliency: the explain
command's figures, the TUI's Saliency view and its Filters view all draw from it.

Every method's map comes from :func:`~.methods.method_maps` (blurred where the method calls for it) and is shown
after one normalisation, :func:`normalise_map`: the magnitude divided by its 99th
percentile and clipped to 0..1, so the top 1 % of pixels are at full strength and a few extreme gradient
pixels cannot wash the rest of the map out (gradient maps are spiky; a division by the maximum would leave
most of the face dark). Occlusion maps are clipped at zero first: only where hiding a patch hurts the class.

The companion files
-------------------
Beside a model ``<stem>.onnx`` the exporter (``fer_train.explain.gradient_onnx``) writes the graphs below,
each checked against torch autograd when written. All tensors are float32 unless marked, the batch axis
``N`` is dynamic, and ``image`` is the model's own input: ``[N, 1, 48, 48]``, raw pixels 0..255.

``<stem>.grad.onnx`` — the input gradient (every model)
    inputs  ``image``, ``class_index`` int64 ``[N]``
    outputs ``logits`` ``[N, K]``; ``gradient`` ``[N, 1, 48, 48]`` = d logits[n, class_index[n]] / d image[n]

``<stem>.gradcam.onnx`` — Grad-CAM's inputs (models with conv layers)
    inputs  ``image``, ``class_index`` int64 ``[N]``
    outputs ``logits`` ``[N, K]``; for the middle and the last conv layer ``activation_<layer>`` ``[N, C, H, W]``
    (its output after its activation function) and ``gradient_<layer>`` = d logits[n, class_index[n]] / d
    activation. Metadata ``explain_cam_layers`` lists the two layers with their ``role`` (middle, last) and
    ``window`` ([offset, side]: the square of the face they see, [4, 40] for a model trained on 40-pixel crops);
    :func:`gradcam_map` turns a pair into the map, placed on that square.

``<stem>.layers.onnx`` — the conv layers' outputs (models with conv layers)
    inputs  ``image``
    outputs ``conv1`` … ``convL``: each conv layer's output ``[N, C, H, W]`` in forward order, before its
    activation function (the Conv2d's own output)

``<stem>.filters.<layer>.onnx`` — one per conv layer, e.g. ``cnn.filters.conv2.onnx``
    inputs  ``image``, ``filter_index`` int64 ``[N]``
    outputs ``activation`` ``[N]`` = the mean over positions of channel ``filter_index[n]`` of the layer's
    output for image ``n``; ``gradient`` ``[N, 1, 48, 48]`` = d activation[n] / d image[n]. Gradient ascent
    on a batch of ``C`` noise images with ``filter_index = 0 … C-1`` visualises the layer's ``C`` filters
    (:func:`ascend`).

Every companion's metadata holds ``explain_kind`` (``gradient``, ``gradcam``, ``layers`` or ``filters``),
``explain_of`` (the model's file name), ``explain_layers`` (JSON list of ``{name, module, channels,
height, width, window}``, one per conv layer), ``explain_layer`` (filters only) and the model's ``class_names``.
A folder of models should skip companions when it lists models: :func:`is_companion`.
"""

from .ascent import AscentConfig, AscentResult, ascend, tv_gradient
from .companions import filters_path, gradcam_path, gradient_path, is_companion, layers_path
from .explainer import ExplainError, Explainer, FaceSaliency, SaliencyResult
from .faithfulness import REMOVALS, Curves, FaceFaithfulness, curves, face_faithfulness, random_maps
from .gradcam import gradcam_map, upsample
from .heatmap import HEAT_LUT, heat_colours, heat_over_face, legend_colours
from .images import as_batch, deprocess_filter, gaussian_blur, masked_image, normalise_map
from .methods import DEFAULT_METHOD, FACE_METHODS, MEASURED_ONLY, METHODS, Method
from .saliency import GradientFn, LogitsFn, integrated_gradients, occlusion, occlusion_batch, smoothgrad
from .sanity import rank_correlation

__all__ = ["DEFAULT_METHOD", "FACE_METHODS", "HEAT_LUT", "MEASURED_ONLY", "METHODS", "REMOVALS", "AscentConfig", "AscentResult", "Curves", "ExplainError", "Explainer",
           "FaceFaithfulness", "FaceSaliency", "GradientFn", "LogitsFn", "Method", "SaliencyResult", "as_batch", "ascend", "curves",
           "deprocess_filter", "face_faithfulness", "filters_path", "gaussian_blur", "gradcam_map", "gradcam_path", "gradient_path", "heat_colours", "heat_over_face", "legend_colours",
           "integrated_gradients", "is_companion", "layers_path", "masked_image", "normalise_map", "occlusion", "occlusion_batch",
           "random_maps", "rank_correlation", "smoothgrad", "tv_gradient", "upsample"]

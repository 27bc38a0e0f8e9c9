"""Explanations of a trained model: where it looks and what its filters respond to.

- ``layer_steps``: a model as a chain of layers, each with its backward pass written in forward operators;
- ``backward``: the gradient graphs made of those steps (input gradient, filter gradient, layer outputs, Grad-CAM),
  which the ONNX exporter can translate;
- ``gradient_onnx``: the companion ONNX graphs beside a model (gradient, layer outputs, filter gradients),
  checked against torch autograd when they are written;
- ``saliency``: gradient, SmoothGrad and occlusion maps in torch;
- ``filters``: filter visualisation by gradient ascent and layer outputs in torch;
- ``sheets``: the pictures (PNG, matplotlib);
- ``report``: ``fer-train explain``, all of the above for one model into one folder with an index.

The torch-free side (what the TUI runs) is :mod:`fer_runtime.explain`.
"""

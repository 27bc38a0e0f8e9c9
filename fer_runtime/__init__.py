"""Run and explain exported fer models with numpy, onnxruntime, Pillow and OpenCV: no torch, no terminal UI.

- :mod:`fer_runtime.contract` — every name that crosses between packages: input/output names, metadata keys,
  companion files, progress events, FER2013's classes;
- :mod:`fer_runtime.classifier` — open an exported model (:func:`~fer_runtime.classifier.load_classifier`) and
  predict logits;
- :mod:`fer_runtime.catalog` — the models in ``exported/`` and the most accurate of them;
  :mod:`fer_runtime.family` — a model family's file names and the fastest variant that passed the accuracy gate;
  :mod:`fer_runtime.sessions` — the one place that opens onnxruntime sessions;
- :mod:`fer_runtime.faces` — faces in photographs: detect, crop as FER2013, classify; the detectors
  :mod:`fer_runtime.centerface` (the default, a CNN with landmarks) and :mod:`fer_runtime.haar` (OpenCV's cascade),
  :mod:`fer_runtime.tracking` (faces followed through a video), :mod:`fer_runtime.pipeline` (all of ``fer-predict``
  as a Python API), :mod:`fer_runtime.media` (images and videos, with errors that name the file and frame),
  :mod:`fer_runtime.annotate`, :mod:`fer_runtime.timeline`, :mod:`fer_runtime.records`,
  :mod:`fer_runtime.predict_cli` (``fer-predict``'s command line), :mod:`fer_runtime.composites` (faces pasted at
  known boxes, to measure detection);
- :mod:`fer_runtime.explain` — saliency, occlusion, masking, layer outputs and gradient ascent on filters,
  from a model's companion graphs;
- :mod:`fer_runtime.io`, :mod:`fer_runtime.splits` — FER2013 CSV files and image folders, the study's splits
  (:mod:`fer_runtime.csv_parse` parses the CSV text; :mod:`fer_runtime.source` holds what every reader returns);
- :mod:`fer_runtime.metrics` — accuracy, per-class recall, confusion matrices, softmax;
- :mod:`fer_runtime.synthetic` — the built-in demo faces.

``fer_train`` (torch) and ``fer_tui`` (textual) build on this package; it imports neither.
"""

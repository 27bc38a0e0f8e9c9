"""Semi-supervised training with part of the labels hidden, measured against the labeled part alone.

The study's protocol (``fer-train --semi --threshold 0.45``): keep the labels of a stratified, seeded share
(``--labeled-fraction``, a half) of the training images and treat the rest as unlabeled. Train in rounds of
``--epochs-per-round`` epochs; after each round the model predicts the unlabeled images, and those whose top
softmax probability is *strictly greater* than the threshold join the next round's training set with their
predicted label. The selection is made afresh every round: an image admitted once may drop out again. One
model and optimizer carry on across rounds. Beside it the run trains, on the same labeled images, from the
same initial weights, with the same epochs and per-epoch seeds (the arms, ``--arms``):

- ``baseline``: the labeled part alone;
- ``self-training``: the study's rule, one threshold for every class;
- ``per-class``: one threshold per predicted class. ``auto`` is class-balanced (after CBST, Zou et al. 2018):
  every predicted class admits the same share of its images, the share the global threshold admits overall;
- ``fixmatch``: consistency training, see :mod:`.fixmatch`;
- ``noisy-student``: the baseline's soft labels for every unlabeled image, learnt under noise (augmentation,
  erasing, dropout, ``--student-mixup``) with half of every batch labeled, see :mod:`.noisy`. ``fer-train
  --noisy-student`` is ``--semi --arms baseline,noisy-student``: the method that gains, with its teacher beside it.

``self-training@0.9`` (or ``per-class@T``) is a pseudo-label arm with a threshold of its own, so that one run
sweeps thresholds against one baseline and one shared round 1.

Round 1 (``--first-round-epochs``, longer than the others by default, so that the model is confident before the
first selection) sees no pseudo-labels yet, so it is the same in every arm but FixMatch; it is computed once and
shared, also under a schedule (the pseudo-label arms follow the baseline's learning rate step by step until
something is admitted).
``--parallel-arms`` trains the arms at the same time instead, one process each (:mod:`.processes`);
every arm then trains its own round 1, and reaches the same weights as when the arms run one after the other.

The true labels of the unlabeled images never reach the loss, by construction: :func:`prepare` hands the
training loop the unlabeled images as a bare image tensor and their labels only to a :class:`PseudoLabelAudit`,
which grades each round's selection after it is fixed; what it says is logged, never used. The tests poison
those labels and check that training stays bit-identical.

Run folder (``runs/semi-<model>-<time>``): ``config.json``; one ordinary run folder per arm (``best.pt``,
``last.pt``, ``history.json``, ``rounds.json``, ``curves.png``); ``rounds.json`` for all arms; at the end
``semi.json`` (the summary), ``comparison.md``, ``comparison.png`` and ``rounds.png``, and the self-trained model
the main arm exported to ``<arm>/model.onnx`` (the noisy student when the run has one, else self-training). ``--resume`` continues at the start of the epoch in progress.

The modules: :mod:`.settings` (the flags, the rounds), :mod:`.selection` (the data and the selection rule),
:mod:`.arm` (one arm: the epoch loop of :mod:`fer_train.train` with rounds), :mod:`.fixmatch` (its epoch),
:mod:`.run` (the whole run), :mod:`.processes` (``--parallel-arms``) and :mod:`.report` (the summary).
"""

from .arm import ArmLoop
from .processes import ArmFailed, run_arms_in_processes
from .run import SemiResult, train_semi
from .selection import (PseudoLabelAudit, Selection, SemiData, class_balanced_thresholds, prepare, select_confident, split_labeled,
                        thresholds_for, training_set, unlabeled_probabilities)
from .settings import (ARMS, LABELED_SEED_OFFSET, PSEUDO_LABEL_ARMS, SHARED_ROUND, canonical_arms, new_semi_run_dir, parse_class_thresholds,
                       semi_config)

__all__ = ["ARMS", "LABELED_SEED_OFFSET", "PSEUDO_LABEL_ARMS", "SHARED_ROUND", "ArmFailed", "ArmLoop", "PseudoLabelAudit",
           "Selection", "SemiData", "SemiResult", "canonical_arms", "class_balanced_thresholds", "new_semi_run_dir", "parse_class_thresholds", "prepare",
           "run_arms_in_processes", "select_confident", "semi_config", "split_labeled", "thresholds_for", "train_semi", "training_set",
           "unlabeled_probabilities"]

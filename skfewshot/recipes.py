"""Ready-made few-shot heads, training augmentations and the digits demo.

A *head* is the classifier fitted on each support set, on top of frozen
features. :func:`make_head` builds one by its short name (the names the
``skfewshot`` command and the benchmarks use, listed in :data:`HEADS`, with a
human label in :data:`HEAD_LABELS`); :func:`run_demo` is the digits
experiment that ``skfewshot demo`` prints: pretrain a Conv4 on digits 0-4,
then compare the heads on 5-way episodes of the novel digits 5-9.
:func:`make_augmentation` builds the named training augmentations of
``skfewshot train --augment`` (:data:`AUGMENTATIONS`), and
:func:`pretrain_one_shot_ensemble` the one-shot Omniglot recipe that uses them,
on the images :func:`prepare_one_shot_training` makes of the drawings.
The CLI and the benchmarks share these definitions.

Importing this module is cheap: torch and scikit-learn are imported when a
head is built or the demo runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.base import BaseEstimator

    from .model_selection import EpisodeScores

__all__ = [
    "AUGMENTATIONS",
    "DEMO_BASE_CLASSES",
    "HEADS",
    "HEAD_LABELS",
    "make_augmentation",
    "make_head",
    "ONE_SHOT_INK_RADIUS",
    "ONE_SHOT_MEMBERS",
    "prepare_one_shot_training",
    "pretrain_demo_backbone",
    "pretrain_one_shot_ensemble",
    "run_demo",
    "whiten_backbone",
]

#: Short names of the heads :func:`make_head` builds.
HEADS = ("prototype", "finetune", "transductive", "logreg")

#: What each head is called in tables and figures.
HEAD_LABELS = {
    "prototype": "PrototypeClassifier",
    "finetune": "FineTunedCosine",
    "transductive": "FineTunedCosine (transductive)",
    "logreg": "LogisticRegression",
}

#: Names of the training augmentations :func:`make_augmentation` builds.
AUGMENTATIONS = ("none", "shift-rotate", "affine", "affine-elastic")

#: The members of :func:`pretrain_one_shot_ensemble`'s ensemble by default, the
#: best ensemble on Omniglot's validation alphabets (with test-time shifts,
#: within the 30-minute CPU budget) when trained on
#: :func:`prepare_one_shot_training`'s images for 20 epochs: an affine +
#: elastic pretrained network and an affine + elastic ProtoNet meta-trained on
#: 20-way 5-shot 5-query episodes. Read-only mappings.
ONE_SHOT_MEMBERS = (
    MappingProxyType({"augment": "affine-elastic"}),
    MappingProxyType(
        {
            "recipe": "protonet",
            "augment": "affine-elastic",
            "n_way": 20,
            "n_shot": 5,
            "n_query": 5,
        }
    ),
)

#: The size :func:`prepare_one_shot_training` scales every drawing's ink to:
#: its radius of gyration as a fraction of the image width
#: (:class:`~skfewshot.datasets.InkNormalizer`'s ``radius``), chosen on
#: Omniglot's validation alphabet.
ONE_SHOT_INK_RADIUS = 0.28

#: The digits the demo's backbone is pretrained on (its novel classes are the rest).
DEMO_BASE_CLASSES = (0, 1, 2, 3, 4)

#: Side of the demo's images: Conv4 halves the size four times (32 -> 2x2 maps).
_DEMO_IMAGE_SIZE = 32


def _member_trainers():
    """The trainer of each member ``"recipe"`` of :func:`pretrain_one_shot_ensemble`."""
    from .training import ProtoNetMetaTrainer, SupervisedPretrainer

    return {"pretrain": SupervisedPretrainer, "protonet": ProtoNetMetaTrainer}


def make_head(name: str, **params: Any) -> BaseEstimator:
    """A fresh, unfitted few-shot head by its short name.

    Parameters
    ----------
    name : {"prototype", "finetune", "transductive", "logreg"}
        Which head (see :data:`HEADS`):

        - ``"prototype"``: :class:`~skfewshot.PrototypeClassifier`;
        - ``"finetune"``: :class:`~skfewshot.FineTunedCosineClassifier`;
        - ``"transductive"``: :class:`~skfewshot.FineTunedCosineClassifier`
          with ``transductive=True, entropy_weight=0.1``, a small fixed entropy
          weight (a weight of 1 over-sharpened 1-shot predictions on raw-pixel
          digit episodes when the head was developed);
        - ``"logreg"``: scikit-learn's
          :class:`~sklearn.linear_model.LogisticRegression` (``max_iter=1000``)
          on L2-normalised features, a pipeline.

    **params : dict
        Hyper-parameters of the head's classifier (the
        ``LogisticRegression`` of ``"logreg"``), overriding the defaults above,
        e.g. ``alpha=0.1`` or ``C=10.0``.

    Returns
    -------
    head : estimator
        An unfitted scikit-learn classifier taking feature rows.

    Raises
    ------
    ValueError
        When ``name`` is not one of :data:`HEADS`.
    TypeError
        When ``params`` holds an argument the head's classifier does not take.

    Examples
    --------
    >>> from skfewshot.recipes import HEADS, make_head
    >>> HEADS
    ('prototype', 'finetune', 'transductive', 'logreg')
    >>> make_head("transductive", alpha=0.1)
    FineTunedCosineClassifier(alpha=0.1, entropy_weight=0.1, transductive=True)
    >>> make_head("logreg", C=10.0).steps[-1][1]
    LogisticRegression(C=10.0, max_iter=1000)
    """
    if name == "prototype":
        from .prototype import PrototypeClassifier

        return PrototypeClassifier(**params)
    if name in ("finetune", "transductive"):
        from .finetune import FineTunedCosineClassifier

        if name == "transductive":
            params = {"transductive": True, "entropy_weight": 0.1, **params}
        return FineTunedCosineClassifier(**params)
    if name == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import Normalizer

        params = {"max_iter": 1000, **params}
        return make_pipeline(Normalizer(), LogisticRegression(**params))
    raise ValueError(f"unknown head {name!r}; choose from {', '.join(HEADS)}.")


def make_augmentation(name: str, image_size: int = 28) -> Any:
    """The training augmentation of a short name, for square images of a size.

    One definition serves ``skfewshot train --augment`` and the Omniglot
    benchmarks (issue 14's ablation chose ``"affine"`` and ``"affine-elastic"``
    for its final ensemble): pass the result as a trainer's ``augment=``.

    Parameters
    ----------
    name : {"none", "shift-rotate", "affine", "affine-elastic"}
        Which augmentation (see :data:`AUGMENTATIONS`):

        - ``"none"``: None (no augmentation);
        - ``"shift-rotate"``: ``RandomAffine(degrees=10, translate=2/28)``, the
          first Omniglot benchmark's shifts of up to 2 pixels of 28 and
          rotations of up to 10 degrees;
        - ``"affine"``: ``RandomAffine(degrees=15, translate=0.08,
          scale=(0.85, 1.15), shear=10)``;
        - ``"affine-elastic"``: ``"affine"`` then an
          :class:`~skfewshot.augment.ElasticDistortion` whose size follows the
          image: Simard et al.'s 28 x 28 ``alpha`` and ``sigma`` (its defaults)
          times ``k ** 2`` and ``k`` for ``k = image_size / 28``.

    image_size : int, default=28
        Side of the (square) training images, in pixels.

    Returns
    -------
    augment : callable or None
        An augmentation of :mod:`skfewshot.augment` (None for ``"none"``).

    Raises
    ------
    ValueError
        When ``name`` is not one of :data:`AUGMENTATIONS` or ``image_size`` is
        not a positive integer.

    Examples
    --------
    >>> from skfewshot.recipes import make_augmentation
    >>> make_augmentation("affine")
    RandomAffine(degrees=15.0, translate=0.08, scale=(0.85, 1.15), shear=10.0)
    >>> make_augmentation("affine-elastic", image_size=56).steps[1]
    ElasticDistortion(alpha=136.0, sigma=8.0)
    >>> make_augmentation("none") is None
    True
    """
    if name not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTATIONS)}."
        )
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or (image_size < 1)
    ):
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    if name == "none":
        return None
    from .augment import Compose, ElasticDistortion, RandomAffine

    if name == "shift-rotate":
        return RandomAffine(degrees=10.0, translate=2 / 28)
    affine = RandomAffine(degrees=15.0, translate=0.08, scale=(0.85, 1.15), shear=10.0)
    if name == "affine":
        return affine
    k, simard = image_size / 28, ElasticDistortion()
    return Compose(
        [affine, ElasticDistortion(alpha=simard.alpha * k**2, sigma=simard.sigma * k)]
    )


def _test_time_warps(angles, scales):
    """``BackboneTransformer(test_time_warps=...)`` of the ``--test-time-angles``
    and ``--test-time-scales`` options (the CLI's and the Omniglot benchmark's):
    every angle (degrees) with every scale, angles slowest, as float pairs. A
    missing one (None) is the identity, angle 0 or scale 1; both missing: None
    (no warp)."""
    if angles is None and scales is None:
        return None
    return [
        (float(a), float(s))
        for a in ((0.0,) if angles is None else angles)
        for s in ((1.0,) if scales is None else scales)
    ]


def pretrain_demo_backbone(
    *,
    random_state: int = 0,
    max_epochs: int = 20,
    device: Any = "auto",
    verbose: int = 1,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """The demo's backbone: a Conv4 pretrained on the base digits 0-4.

    scikit-learn's digits (8x8, enlarged to 32x32 for Conv4) of the classes
    :data:`DEMO_BASE_CLASSES` train a :class:`~skfewshot.models.Conv4`
    (``hidden=32``) with :class:`~skfewshot.training.SupervisedPretrainer`,
    exactly as :func:`run_demo` does; the novel digits are returned for the
    few-shot evaluation.

    Parameters
    ----------
    random_state : int, default=0
        Seeds the initial weights and the training: the same seed gives the
        same weights on the CPU (a GPU's non-deterministic kernels, e.g.
        cuDNN's backward, can make them differ from one run to the next).
    max_epochs : int, default=20
        Pretraining epochs.
    device : str or torch.device, default="auto"
        Where the backbone trains: "auto" (CUDA, MPS, CPU), "cpu", "cuda"...
    verbose : int, default=1
        0 is silent; 1 prints the training table (one line per epoch).

    Returns
    -------
    trainer : SupervisedPretrainer
        The fitted trainer: ``trainer.backbone_`` is the backbone,
        ``trainer.history_`` its training history.
    X_novel : ndarray of shape (n_novel, 1, 32, 32)
        The images of the novel digits 5-9, never seen in training.
    y_novel : ndarray of shape (n_novel,)
        Their labels.

    Examples
    --------
    >>> from skfewshot.recipes import pretrain_demo_backbone
    >>> trainer, X_novel, y_novel = pretrain_demo_backbone(max_epochs=1, verbose=0)
    >>> X_novel.shape[1:], sorted(set(y_novel.tolist()))
    ((1, 32, 32), [5, 6, 7, 8, 9])
    """
    from ._torch_utils import seeded_init
    from .datasets import load_digits_images
    from .models import Conv4
    from .training import SupervisedPretrainer

    X, y = load_digits_images(image_size=_DEMO_IMAGE_SIZE, return_X_y=True)
    base = np.isin(y, DEMO_BASE_CLASSES)
    net = seeded_init(lambda: Conv4(in_channels=1, hidden=32), random_state)
    trainer = SupervisedPretrainer(
        net,
        max_epochs=max_epochs,
        device=device,
        random_state=random_state,
        verbose=verbose,
    )
    trainer.fit(X[base], y[base])
    return trainer, X[~base], y[~base]


def prepare_one_shot_training(
    X: Any,
    y: Any,
    groups: Any,
    *,
    ink_radius: float | None = ONE_SHOT_INK_RADIUS,
    image_size: Any = 28,
    random_state: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-shot Omniglot recipe's training images, from base-class drawings.

    Three steps, as ``skfewshot train --ink-normalize --ink-radius R
    --rotations --splices`` takes them:

    1. :class:`~skfewshot.datasets.InkNormalizer` with ``radius=ink_radius``
       and ``image_size``: every drawing centred on its ink, scaled so that the
       ink's radius of gyration is ``ink_radius`` times the width, then
       resized;
    2. :func:`~skfewshot.datasets.augment_rotations`: the 90, 180 and 270
       degree rotations as new classes;
    3. :func:`~skfewshot.datasets.augment_splices`, drawn with
       ``random_state``: one new class per class, spliced from two characters
       of one group (alphabet) in one orientation.

    Train :func:`pretrain_one_shot_ensemble` on the result with
    ``max_epochs=20`` (twice the classes: as many forwards as 40 epochs
    without the splices), and feed the trained ensemble drawings through the
    same :class:`~skfewshot.datasets.InkNormalizer` (the pipeline that
    :func:`pretrain_one_shot_ensemble` describes).

    Parameters
    ----------
    X : array-like of shape (n_samples, 1, height, width)
        Drawings of the base classes, at full resolution (Omniglot's 105 x 105,
        ``load_omniglot(image_size=None)``): the normaliser needs the detail.
    y : array-like of shape (n_samples,)
        Their class labels, integer codes ``0 .. n_classes - 1``.
    groups : array-like of shape (n_samples,)
        The group of each drawing, e.g. its alphabet
        (``load_omniglot(...).groups``); the splices pair classes within a
        group, so every group needs two classes.
    ink_radius : float in (0, 1] or None, default=ONE_SHOT_INK_RADIUS
        The ink's radius of gyration after the scaling, as a fraction of the
        width; None only centres the drawings.
    image_size : int, (height, width) or None, default=28
        The side the normalised drawings are resized to (None keeps theirs).
    random_state : int, default=0
        Seeds the splices (which classes pair, which halves join).

    Returns
    -------
    X_train : ndarray of shape (8 * n_samples, 1, image_size, image_size)
        The normalised drawings, their rotations, then the spliced drawings
        of all of them.
    y_train : ndarray of shape (8 * n_samples,)
        Their labels: ``8 * n_classes`` classes.
    groups_train : ndarray of shape (8 * n_samples,)
        One group per original group, orientation and block (drawn or
        spliced), for trainers that draw episodes within a group (the default
        members of :func:`pretrain_one_shot_ensemble` take none).

    Raises
    ------
    ValueError
        When ``groups`` is None or not one entry per drawing, a group holds a
        single class, a class is in two groups, or ``X``, ``y``,
        ``ink_radius`` or ``image_size`` are refused by the steps above.

    See Also
    --------
    pretrain_one_shot_ensemble : Trains the recipe's networks on the result.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot.recipes import prepare_one_shot_training
    >>> X = np.zeros((4, 1, 32, 32), dtype=np.float32)
    >>> X[:, :, 12:20, 10:22] = 1.0  # a bar of ink in every drawing
    >>> X_train, y_train, groups_train = prepare_one_shot_training(
    ...     X, [0, 1, 2, 3], ["a", "a", "b", "b"], image_size=16)
    >>> X_train.shape, len(np.unique(y_train)), len(np.unique(groups_train))
    ((32, 1, 16, 16), 32, 16)
    """
    from functools import partial

    from .datasets import InkNormalizer, augment_rotations, augment_splices
    from .datasets._augment import (
        _augmented_by_orientation,
        _check_images_and_labels,
        _checked_groups,
        _single_class_groups,
    )

    if groups is None:
        raise ValueError(
            "groups is required: the group (alphabet) of each drawing, within "
            "which the splices pair classes."
        )
    labels = _check_images_and_labels(X, y)[1]
    groups = _checked_groups(groups, labels)
    # a group of one class named as given (augment_splices would name the
    # code of one orientation)
    lonely = _single_class_groups(labels, groups)
    if lonely:
        raise ValueError(
            f"group {lonely[0].item()!r} holds a single class "
            f"({labels[groups == lonely[0]][0].item()!r}), and the splices join "
            f"two classes of one group; {len(lonely)} group(s) hold only one."
        )
    # integer codes in the order of the groups, as _augmented_by_orientation needs
    groups = np.unique(groups, return_inverse=True)[1].reshape(-1)
    X = InkNormalizer(radius=ink_radius, image_size=image_size).transform(X)
    X, y, groups = _augmented_by_orientation(augment_rotations, X, y, groups)
    return _augmented_by_orientation(
        partial(augment_splices, random_state=random_state), X, y, groups
    )


def pretrain_one_shot_ensemble(
    X: Any,
    y: Any,
    *,
    groups: Any = None,
    members: Sequence[dict] = ONE_SHOT_MEMBERS,
    make_module: Any = None,
    max_epochs: int = 40,
    random_state: int = 0,
    device: Any = "auto",
    verbose: int = 0,
    last_pool: bool = False,
) -> tuple[Any, list]:
    """Train several backbones on base classes and join them in an ensemble.

    The one-shot Omniglot recipe of :ref:`benchmarks_omniglot` ("Ablation"),
    as a function. A member is trained one of two ways, by its ``"recipe"``:

    - ``"pretrain"`` (the default): a
      :class:`~skfewshot.training.SupervisedPretrainer` with its defaults
      (linear head, SGD with learning rate 0.05, batch 64, weight decay 5e-4,
      cosine schedule). A *born-again* member is a second generation, trained
      with a first generation of the same parameters as ``teacher=`` (trained
      once, shared by the born-again members of those parameters);
    - ``"protonet"``: a :class:`~skfewshot.training.ProtoNetMetaTrainer` with
      its defaults (Adam with learning rate 1e-3, cosine schedule, euclidean
      prototypes), meta-trained on ``n_way``-way ``n_shot``-shot episodes of
      ``n_query`` queries per class, ``episodes_per_epoch =
      max(1, round(n_samples / (n_way * (n_shot + n_query))))`` of them unless
      the member says: an epoch sees as many images as a pretrained member's.
      It is the trainer of the Omniglot benchmarks' ``protonet`` recipe.

    Either way with ``max_epochs`` epochs and
    ``augment=make_augmentation(name, image_size)``, plus the member's own
    parameters, trained on ``(X, y)``. Every network starts from the same
    initial weights, ``make_module()`` built with torch seeded by
    ``random_state`` (or by the member's own), as ``skfewshot train --seed``
    does.

    The recipe trains the default members for 20 epochs on the images
    :func:`prepare_one_shot_training` makes of Omniglot's drawings (ink
    normalised, rotated, spliced), so on the CPU it gives the same ensemble
    as::

        skfewshot train DATA --ink-normalize --ink-radius 0.28 --rotations \
            --splices --augment affine-elastic --epochs 20 -o a.pt
        skfewshot train DATA --ink-normalize --ink-radius 0.28 --rotations \
            --splices --recipe protonet --augment affine-elastic \
            --n-way 20 --n-shot 5 --n-query 5 --episodes-per-epoch E \
            --epochs 20 -o b.pt
        skfewshot ensemble a.pt b.pt --no-last-pool -o final.pt

    where ``DATA`` is ``--dataset omniglot --data-dir DIR --subset SUBSET``
    and ``E = max(1, round(n_samples / 200))`` (an episode of 20 classes of
    5 + 5 images holds 200): 109 for the 21,760 images made of Omniglot's
    ``images_background_small1``.

    Evaluate it on drawings normalised alike, with test-time shifts:
    ``make_pipeline(InkNormalizer(radius=ONE_SHOT_INK_RADIUS, image_size=28),
    BackboneTransformer(ensemble, test_time_shifts=1), PrototypeClassifier())``,
    as the benchmark does (``skfewshot evaluate`` and ``runs`` normalise by
    the backbone file's record).

    Parameters
    ----------
    X : array-like of shape (n_samples, channels, height, width)
        Images of the base classes (for Omniglot, made by
        :func:`prepare_one_shot_training`).
    y : array-like of shape (n_samples,)
        Their base-class labels (a column of shape ``(n_samples, 1)`` is
        taken with a ``DataConversionWarning``, as the trainers take it).
    groups : array-like of shape (n_samples,), default=None
        Group of each image (e.g. its alphabet, each rotation a group of its
        own), for the ProtoNet members with ``"within_groups": True``, which
        draw their episodes within one group; needed by them, refused when
        no member uses them (the default members do not).
    members : sequence of dict, default=ONE_SHOT_MEMBERS
        One dict per member: ``"augment"``, a name of :data:`AUGMENTATIONS`
        (required); ``"recipe"``, ``"pretrain"`` (default) or ``"protonet"``;
        for a pretrain member, ``"born_again"`` (default False), whether it is
        a born-again second generation (its first generation is the member
        without ``born_again`` and ``distill_*``, trained once for every
        born-again member that differs from it only there); and any other
        parameter of the member's trainer for this member alone, e.g.
        ``"rotation_loss_weight"``
        of :class:`~skfewshot.training.SupervisedPretrainer`, ``"n_way"`` or
        ``"episodes_per_epoch"`` of
        :class:`~skfewshot.training.ProtoNetMetaTrainer`, or ``"max_epochs"``
        (which wins over the function's ``max_epochs``), or ``"random_state"``,
        an int that seeds this member's initial weights and training instead
        of the function's ``random_state`` (so that an ensemble can hold the
        same member from several seeds). Two equal members are refused (the
        same network twice), compared by every parameter they train with: a
        member that spells out a default equals one that does not.
    make_module : callable, default=None
        Builds a fresh backbone, e.g. ``lambda: Conv4(hidden=128)``; None is
        ``Conv4(in_channels=X.shape[1])``. On a GPU,
        ``functools.partial(ResNet12, in_channels=1)`` gave the best Omniglot
        ensemble on validation with the previous default members (three, on
        drawings as loaded: 82.5 and 83.5 % on test with test-time shifts in
        two runs, against 80.4 and 79.9 % for Conv4 members; about 3 minutes
        of an H100; out of the CPU budget).
    max_epochs : int, default=40
        Epochs of every training whose member does not set its own (a
        born-again member costs two trainings); the recipe trains 20 on
        :func:`prepare_one_shot_training`'s images.
    random_state : int, default=0
        Seeds the initial weights and the training of every member that does
        not set its own ``"random_state"``.
    device : str or torch.device, default="auto"
        Where to train (the GPU when one is present).
    verbose : int, default=0
        The trainers' verbosity: 0 is silent, 1 prints one line per epoch.
    last_pool : bool, default=False
        Whether the ensemble's :class:`~skfewshot.models.Conv4` members embed
        with their last max-pool. Every member trains with it; by default the
        ensemble holds copies that embed without it (``Conv4.last_pool``: at
        28x28 the fourth block's whole 3x3 map, of which the pool keeps only
        the top-left 2x2 window), which scored 1.8 and 1.9 points higher on
        Omniglot's test alphabets and 0.8 higher on the Korean validation
        alphabet (-0.2 on Early_Aramaic). Other architectures are joined as
        trained (ResNet12 averages its whole last map).

    Returns
    -------
    ensemble : BackboneEnsemble
        The members' backbones (on the CPU, in eval mode), their L2-normalised
        features concatenated; copies of the trainers' ``backbone_`` without
        their last pool unless ``last_pool``.
    trainers : list of SupervisedPretrainer or ProtoNetMetaTrainer
        One fitted trainer per member, in order; a born-again member's first
        generation is its ``teacher``.

    Raises
    ------
    ValueError
        Before any training, when ``X`` is not 4-D, ``y`` neither 1-D nor a
        column, ``random_state`` (the function's or a member's) is not an int, or
        ``members`` is empty or
        holds a member that is not a dict, has a ``"recipe"`` other than
        ``"pretrain"`` and ``"protonet"``, no ``"augment"`` or an unknown
        one, a parameter (or value) its trainer
        does not take (a ProtoNet member takes no ``born_again``,
        ``rotation_loss_weight``, ``mixup_alpha``, ``contrastive_*``,
        ``teacher`` or ``distill_*``), the contrastive loss with the
        ``"none"`` augmentation or with mixup,
        ``distill_*`` without ``"born_again": True``, a born-again member with
        a :class:`~skfewshot.training.TrainingCheckpoint` (teacher and student
        would share its file), the rotation loss on non-square images,
        episodes that ``y`` cannot give (fewer than ``n_way`` classes with
        ``n_shot + n_query`` images, in one group for a member with
        ``within_groups``), ``within_groups`` without ``groups`` (or
        ``groups`` that no member uses), or equals another member (a born-again
        member with ``distill_weight=0`` equals the member without its
        distillation settings); the message names the member.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.recipes import pretrain_one_shot_ensemble
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((24, 1, 16, 16), dtype=np.float32)
    >>> y = np.repeat([0, 1, 2], 8)
    >>> ensemble, trainers = pretrain_one_shot_ensemble(
    ...     X, y, members=[{"augment": "affine", "born_again": True},
    ...                    {"augment": "affine-elastic"},
    ...                    {"recipe": "protonet", "augment": "affine-elastic",
    ...                     "n_way": 3, "n_shot": 2, "n_query": 2}],
    ...     make_module=lambda: Conv4(hidden=4), max_epochs=1, device="cpu")
    >>> ensemble(torch.as_tensor(X[:2])).shape  # three members' 4 x 2 x 2 maps
    torch.Size([2, 48])
    >>> trainers[0].backbone_(torch.as_tensor(X[:2])).shape  # trained pooled
    torch.Size([2, 4])
    >>> [type(t).__name__ for t in trainers]
    ['SupervisedPretrainer', 'SupervisedPretrainer', 'ProtoNetMetaTrainer']
    >>> trainers[0].teacher is not None, trainers[1].teacher is None
    (True, True)
    >>> trainers[2].episodes_per_epoch  # round(24 images / (3 * (2 + 2)))
    2
    """
    from sklearn.utils.validation import column_or_1d

    from ._torch_utils import seeded_init
    from .models import BackboneEnsemble, Conv4
    from .models._common import _check_bool
    from .models._conv4 import _without_last_pool

    if len(np.shape(X)) != 4:
        raise ValueError(
            "X must hold images of shape (n_samples, channels, height, width); "
            f"got shape {np.shape(X)}."
        )
    _check_seed("random_state", random_state)
    _check_bool("last_pool", last_pool)
    # a column y is taken with a DataConversionWarning, as the trainers take it
    y = column_or_1d(y, warn=True)
    # what the recipe gives every trainer, unless a member says otherwise
    defaults = {
        "max_epochs": max_epochs,
        "device": device,
        "verbose": verbose,
        "random_state": random_state,
    }
    members = _check_members(members, np.shape(X), y, groups, defaults)
    if make_module is None:
        in_channels = int(np.shape(X)[1])

        def make_module():
            return Conv4(in_channels=in_channels)

    def fit(params, teacher=None):
        module = seeded_init(make_module, params.get("random_state", random_state))
        params = {
            **defaults,
            **params,
            "augment": make_augmentation(params["augment"], int(np.shape(X)[-1])),
        }
        if teacher is not None:  # a born-again (pretrain) member
            params["teacher"] = teacher
        trainer = _member_trainers()[params.pop("recipe")](module, **params)
        return trainer.fit(X, y, groups=groups if params.get("within_groups") else None)

    teachers, trainers = {}, []
    for member in members:
        teacher = None
        if member.pop("born_again", False):
            # the first generation: the member without its distillation
            # settings, trained once for every member that differs only there
            first = {k: v for k, v in member.items() if not k.startswith("distill_")}
            key = repr(sorted(first.items()))
            if key not in teachers:
                teachers[key] = fit(first)
            teacher = teachers[key]
        trainers.append(fit(member, teacher))
    backbones = [t.backbone_ for t in trainers]
    if not last_pool:  # copies: each trainer's head takes the pooled features
        backbones = [_without_last_pool(b)[0] for b in backbones]
    return BackboneEnsemble(backbones), trainers


def whiten_backbone(
    embedding: Any, X: Any, y: Any, *, shrinkage: float = 10.0
) -> tuple[Any, Any]:
    """Build the whitening of a backbone's base-class features into the backbone.

    Fits ``embedding`` (a :class:`~skfewshot.BackboneTransformer`, configured
    as the evaluation will embed: its test-time copies, device and dtype) on
    the base-class images ``X``, fits
    :class:`~skfewshot.preprocessing.WithinClassWhitening` on their features
    and labels ``y``, and returns its module wrapped in a
    :class:`~skfewshot.models.WhitenedBackbone` that applies the fitted map
    after every forward: one module (one backbone file, with
    :func:`~skfewshot.models.save_backbone`) in place of the pipeline
    ``embedding`` + ``FrozenEstimator(whitening)``. ``skfewshot whiten``
    runs it on a backbone file.

    Parameters
    ----------
    embedding : BackboneTransformer
        Its ``module`` is the backbone. A transformer of the same parameters
        (the same module, not a copy) is fitted on ``X``: ``embedding``
        itself is left unfitted, or fitted as it was.
    X : array-like of shape (n_samples, ...)
        Images of the base classes (those the backbone was trained on, in
        the recipe with their rotations as classes; never the classes it will
        be evaluated on), prepared as the evaluation prepares images.
    y : array-like of shape (n_samples,)
        Their labels; at least one class needs two images.
    shrinkage : float, default=10.0
        ``WithinClassWhitening``'s ``shrinkage``.

    Returns
    -------
    whitened : WhitenedBackbone
        ``embedding``'s module (the same object, not a copy) and the map,
        stored on the device and in the dtype of the module's first
        floating-point weights (where the transformer's fit left them).
    whitening : WithinClassWhitening
        The fitted step (its ``eigenvalues_`` say how much each direction was
        scaled).

    Raises
    ------
    ValueError
        From ``WithinClassWhitening`` (no class with two images, no variation
        within any class, a singular covariance at ``shrinkage=0``).

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot import BackboneTransformer
    >>> from skfewshot.models import Conv4
    >>> from skfewshot.recipes import whiten_backbone
    >>> X = np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32)
    >>> y = np.repeat(np.arange(10), 4)
    >>> net, whitening = whiten_backbone(
    ...     BackboneTransformer(Conv4(hidden=8), test_time_shifts=1), X, y)
    >>> type(net).__name__, tuple(net.components.shape), whitening.shrinkage
    ('WhitenedBackbone', (8, 8), 10.0)
    """
    import torch

    from ._torch_utils import first_float_weight
    from .models import WhitenedBackbone
    from .preprocessing import WithinClassWhitening

    # a transformer of the same parameters, the same module (no copy of it)
    features = type(embedding)(**embedding.get_params(deep=False)).fit_transform(X)
    whitening = WithinClassWhitening(shrinkage).fit(features, y)
    module = embedding.module
    weights = first_float_weight(module)
    components = torch.from_numpy(whitening.components_)
    if weights is not None:  # beside the weights, in their dtype
        components = components.to(device=weights.device, dtype=weights.dtype)
    return WhitenedBackbone(module, components), whitening


def _check_seed(name, value):
    """A recipe's seed must be an int: it seeds torch for the initial weights."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}.")


def _check_members(members, X_shape, y, groups, defaults):
    """``members`` as a list of dicts, every error raised before any training.

    Each member's trainer parameters are validated by the trainer itself (on a
    placeholder module), so a bad value fails here, not after the members
    before it have trained. Every returned member names its ``"recipe"``; a
    ProtoNet member also its episodes (``n_way``, ``n_shot``, ``n_query``,
    ``episodes_per_epoch``: the trainer's defaults and the recipe's number of
    episodes where the member gives none). Members are compared by the full
    parameters they would train with (the trainer's defaults, overridden by
    ``defaults``, the recipe's values, then by the member's own), so that equal
    networks compare equal however they are written.
    """
    import inspect

    import torch

    from .models._common import _check_bool
    from .training import TrainingCheckpoint

    members = list(members)
    if not members:
        raise ValueError("members is empty; give at least one dict with 'augment'.")
    trainers = _member_trainers()
    # set by the recipe itself: the module, the named augmentation and the
    # teacher of a born-again member
    allowed = {
        recipe: set(inspect.signature(cls).parameters)
        - {"module", "augment", "teacher"}
        | {"recipe", "augment"}
        for recipe, cls in trainers.items()
    }
    allowed["pretrain"].add("born_again")
    checked, effective, zero_weight = [], [], set()
    for i, member in enumerate(members):
        if not isinstance(member, Mapping):
            raise ValueError(f"members[{i}] must be a dict, got {member!r}.")
        given, member = dict(member), {"recipe": "pretrain", **member}
        recipe = member["recipe"]
        if not isinstance(recipe, str) or recipe not in trainers:
            raise ValueError(
                f"members[{i}]['recipe'] must be one of "
                f"{', '.join(map(repr, trainers))}, got {recipe!r}."
            )
        if "augment" not in member:
            raise ValueError(f"members[{i}] has no 'augment': {given!r}.")
        try:
            make_augmentation(member["augment"])
        except ValueError as exc:
            raise ValueError(f"members[{i}]: {exc}") from None
        unknown = sorted(set(member) - allowed[recipe])
        if unknown:
            raise ValueError(
                f"members[{i}] has parameters {trainers[recipe].__name__} does not "
                f"take (or that the recipe sets): {', '.join(map(repr, unknown))}."
            )
        _check_bool(f"members[{i}]['born_again']", member.get("born_again", False))
        _check_seed(f"members[{i}]['random_state']", member.get("random_state", 0))
        distill = sorted(k for k in member if k.startswith("distill_"))
        if distill and not member.get("born_again", False):
            raise ValueError(
                f"members[{i}] sets {', '.join(distill)} but is not born-again "
                "(add 'born_again': True), so they would be ignored."
            )
        params = {
            k: v
            for k, v in member.items()
            if k not in ("recipe", "augment", "born_again")
        }
        try:
            trainer = trainers[recipe](torch.nn.Identity(), **params)
            trainer._validate_params()
            if recipe == "protonet":
                # the trainer's own checks of its groups and of the classes
                # an episode needs (in one group, with within_groups)
                if trainer.within_groups and groups is None:
                    raise ValueError(
                        "it sets within_groups, but no groups were given: pass "
                        "groups=... (the group of each image)."
                    )
                trainer._checked_targets(y, groups if trainer.within_groups else None)
            elif recipe == "pretrain":
                # its own check of the contrastive loss's augment and mixup
                augment = make_augmentation(member["augment"])
                trainer.set_params(augment=augment)._check_contrastive()
        except ValueError as exc:
            raise ValueError(f"members[{i}]: {exc}") from None
        if recipe == "protonet":
            # as many images per epoch as a pretrained member, unless it says
            episode = trainer.n_way * (trainer.n_shot + trainer.n_query)
            member = {
                **member,
                "n_way": trainer.n_way,
                "n_shot": trainer.n_shot,
                "n_query": trainer.n_query,
                "episodes_per_epoch": member.get(
                    "episodes_per_epoch", max(1, round(X_shape[0] / episode))
                ),
            }
        if member.get("born_again") and any(
            isinstance(c, TrainingCheckpoint) for c in member.get("callbacks") or ()
        ):
            raise ValueError(
                f"members[{i}] is born-again and has a TrainingCheckpoint: its "
                "teacher and itself would write and resume the same file; "
                "checkpoint a born-again member without it."
            )
        if member.get("rotation_loss_weight") and X_shape[-1] != X_shape[-2]:
            raise ValueError(
                f"members[{i}] sets rotation_loss_weight, which rotates the images "
                f"by 90 degrees: they must be square, got {X_shape[-2:]}."
            )
        # every parameter the member trains with; not the placeholder module,
        # nor the verbosity, which does not change the network
        network = {
            **trainer.get_params(deep=False),
            **defaults,
            **member,
            "born_again": member.get("born_again", False),
        }
        del network["module"], network["verbose"]
        undistilled = _without_distillation(network)
        if network in effective:
            j = effective.index(network)
            why = (
                "; a born-again member with distill_weight=0 trains as its first "
                "generation does, whatever its distill_temperature"
                if undistilled or j in zero_weight
                else ""
            )
            raise ValueError(
                f"members[{i}] equals members[{j}]: both would train the same "
                "network from the same seed (the ensemble would hold one network "
                f"twice){why}."
            )
        if undistilled:
            zero_weight.add(i)
        checked.append(member)
        effective.append(network)
    if groups is not None and not any(m.get("within_groups") for m in checked):
        raise ValueError(
            "groups were given, but no member draws its episodes within "
            "groups (a 'protonet' member with 'within_groups': True); leave "
            "groups out."
        )
    return checked


def _without_distillation(network):
    """Drop from a member's ``network`` (every parameter it trains with) the
    distillation settings that change nothing, so that equal networks compare
    equal: those of a member that is not born-again, and those of a born-again
    one with ``distill_weight=0``, whose loss is its first generation's (it
    trains that network again, bit for bit). True for the latter."""
    zero = network["born_again"] and network.get("distill_weight") == 0
    if zero or not network["born_again"]:
        network["born_again"] = False
        network.pop("distill_weight", None)
        network.pop("distill_temperature", None)
    return zero


def _head_on(name, device, params=None):
    """:func:`make_head`'s head with ``params``, computing on ``device`` where
    it takes one (a ``"device"`` in ``params`` wins)."""
    params = params or {}
    head = make_head(name, **params)
    if "device" not in params and "device" in head.get_params(deep=False):
        head.set_params(device=device)
    return head


def run_demo(
    *,
    random_state: int = 0,
    shots: Sequence[int] = (1, 2, 5, 10),
    n_episodes: int = 200,
    max_epochs: int = 20,
    heads: Sequence[str] = HEADS,
    device: Any = "auto",
    verbose: int = 1,
) -> tuple[dict[str, list[EpisodeScores]], dict[str, Any]]:
    """The digits demo: pretrain on digits 0-4, few-shot on the novel digits 5-9.

    scikit-learn's digits (8x8, enlarged to 32x32 for Conv4) are split by
    class: a :class:`~skfewshot.models.Conv4` is pretrained with
    :class:`~skfewshot.training.SupervisedPretrainer` on the base digits
    :data:`DEMO_BASE_CLASSES`, wrapped in a frozen
    :class:`~skfewshot.BackboneTransformer`, and each head is evaluated with
    :func:`~skfewshot.evaluate_episodes` on 5-way episodes (15 queries per
    class) of the novel digits, never seen in training.

    Parameters
    ----------
    random_state : int, default=0
        Seeds the initial weights, the training and the episodes: the same
        seed gives the same numbers on the CPU (a GPU's non-deterministic
        kernels, e.g. cuDNN's backward, can change the last digits from one
        run to the next; pass ``device="cpu"`` to reproduce a table exactly).
    shots : sequence of int, default=(1, 2, 5, 10)
        Support examples per class, one evaluation per value.
    n_episodes : int, default=200
        Episodes per head and shot count.
    max_epochs : int, default=20
        Pretraining epochs.
    heads : sequence of str, default=HEADS
        Names of the heads to compare, see :func:`make_head`.
    device : str or torch.device, default="auto"
        Where the backbone trains and embeds, and where the heads that
        compute in torch score the episodes (every head but ``"logreg"``):
        "auto" (CUDA, MPS, CPU), "cpu", "cuda"...
    verbose : int, default=1
        0 is silent; 1 prints the training table (one line per epoch, on
        stdout as skorch does) and a progress bar per evaluation (stderr).

    Returns
    -------
    results : dict of str to list of EpisodeScores
        For each head name, one :class:`~skfewshot.EpisodeScores` per value of
        ``shots``.
    info : dict
        ``train_time_s``, ``trained_on`` (what the backbone was trained on, as
        :func:`~skfewshot.models.save_backbone` records it), ``classes`` (the
        novel digits evaluated), ``n_base`` and ``n_novel`` (images),
        ``max_epochs``, ``epochs_trained`` and ``device`` (where the backbone
        trained, ``device`` resolved, e.g. ``"cpu"``).

    Raises
    ------
    ValueError
        When a name in ``heads`` is unknown or ``device`` is not a torch
        device available here (both before any training), or when an episode
        asks for more images than a novel digit has.

    Examples
    --------
    >>> from skfewshot.recipes import run_demo
    >>> results, info = run_demo(
    ...     shots=(1,), n_episodes=2, max_epochs=1, heads=("prototype",), verbose=0
    ... )
    >>> info["trained_on"], info["classes"]
    ({'dataset': 'digits', 'classes': [0, 1, 2, 3, 4]}, [5, 6, 7, 8, 9])
    >>> scores = results["prototype"][0]
    >>> scores.n_way, scores.n_shot, scores.n_episodes
    (5, 1, 2)
    """
    from sklearn.datasets import load_digits
    from sklearn.pipeline import make_pipeline

    from ._torch_utils import resolve_device
    from .backbone import BackboneTransformer
    from .model_selection import evaluate_episodes

    heads = list(heads)
    for name in heads:  # fail before training, not after
        make_head(name)
    resolved = str(resolve_device(device))
    t0 = time.perf_counter()
    trainer, X_novel, y_novel = pretrain_demo_backbone(
        random_state=random_state,
        max_epochs=max_epochs,
        device=device,
        verbose=verbose,
    )
    train_time = time.perf_counter() - t0
    features = BackboneTransformer(trainer.backbone_, device=device)
    results = {
        head: [
            evaluate_episodes(
                make_pipeline(features, _head_on(head, device)),
                X_novel,
                y_novel,
                n_way=5,
                n_shot=k,
                n_query=15,
                n_episodes=n_episodes,
                random_state=random_state,
                verbose=verbose,
            )
            for k in shots
        ]
        for head in heads
    }
    info = {
        "train_time_s": round(train_time, 2),
        "trained_on": {"dataset": "digits", "classes": list(DEMO_BASE_CLASSES)},
        "classes": np.unique(y_novel).tolist(),
        "n_base": int(np.isin(load_digits().target, DEMO_BASE_CLASSES).sum()),
        "n_novel": len(y_novel),
        "max_epochs": max_epochs,
        "epochs_trained": len(trainer.history_),
        "device": resolved,
    }
    return results, info

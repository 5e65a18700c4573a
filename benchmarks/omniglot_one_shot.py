"""Omniglot one-shot ablation: which training ingredient helps within-alphabet 1-shot.

Issue 14's question: how far below the 28 % error of the meta-vs-finetune benchmark
(within-alphabet 20-way 1-shot) can the library's own ingredients take a Conv4
trained on the minimal background set on this CPU? Protocol of
``omniglot_meta_vs_finetune.py``: train on ``images_background_small1`` without its
Early_Aramaic alphabet (with the 90/180/270-degree rotations as new classes),
validate on Early_Aramaic (20-way 1-shot within the alphabet, 200 episodes, seed 1),
test on the small2 alphabets small1 lacks (Japanese katakana, Sanskrit, Tagalog),
600 within-alphabet 20-way 1-shot episodes of 15 queries per class, seed 0, with the
inductive :class:`~skfewshot.PrototypeClassifier` (cosine prototypes: each query
classified alone). Every configuration trains for ``--epochs`` (default 40; the
ablation ran ``affine-rotation`` and ``affine-mirrors`` with ``--epochs 20``, and
``affine-contrastive`` with both) with the comparison's
settings (``make_trainer``: SGD, lr 0.05, batch 64, cosine schedule for the
supervised recipe; Adam 1e-3 for ProtoNet), initial weights and training seeded
by ``--seed`` (0);
test-time shifts (``BackboneTransformer(test_time_shifts=1)``) are scored for every
backbone. Results are appended to ``benchmarks/_artifacts/omniglot_one_shot.jsonl``
(one JSON line per configuration, with wall and CPU seconds), and its backbone to
``benchmarks/_artifacts/conv4_one_shot_NAME.pt``, whatever ``--epochs`` (a second
run of a configuration replaces the first's backbone, which ``--ensemble NAME``
scores).

Usage (from the repository root; one configuration per call, each a few minutes on
two idle CPU cores; ``affine-distill`` trains its teacher, ``affine``, first)::

    python benchmarks/omniglot_one_shot.py --config affine
    python benchmarks/omniglot_one_shot.py --config affine-distill
    python benchmarks/omniglot_one_shot.py --ensemble affine-distill affine-elastic

``--config protonet-affine-elastic-within`` trains the ProtoNet network with
its episodes drawn within one training alphabet in one orientation
(``ProtoNetMetaTrainer(within_groups=True)``, each rotation of an alphabet a
group of its own). ``--config final`` trains the library's recipe,
:func:`skfewshot.recipes.pretrain_one_shot_ensemble` with its default members
(``affine-elastic`` and ``protonet-affine-elastic``) on the images of
:func:`~skfewshot.recipes.prepare_one_shot_training` (normalised to radius
0.28 unless ``--ink-radius`` says, rotated, spliced) for half the epochs,
in one call; its Conv4s embed without their last max-pool (the library's
default since 2026-11-28, ``last_pool=False``), and ``--config final-pooled``
trains the same networks and embeds with it (the recipe until then; every
earlier ``final-*`` configuration keeps its pool, as its rows were measured).
``--config final-seeds`` trains each of the recipe's members from two seeds
(``--seed`` and ``--seed + 1``, a member's own ``"random_state"``) for half
the epochs each: four networks for the recipe's budget; ``final-32px`` trains
the recipe on 32 x 32 drawings (a 4 x 4 last map), and ``final-within`` with
its ProtoNet member's episodes drawn within one alphabet in one orientation
(``within_groups``; no better on either fold); ``final-splices2``
splices the drawings in two rounds (three times the classes, a third of the
epochs, as many forwards; within 0.7 points of the recipe on validation,
either way, also with ``--epochs 52`` and over two seeds).
``--config final-trio`` trains the previous default
(until 2026-11-28: ``affine-rotation`` trained with ``--epochs 20``,
``affine-elastic`` and ``protonet-affine-elastic``, on the drawings as
loaded), ``--config final-resnet12`` the trio with ResNet12 members
(``make_module``), for a GPU; ``--config final-mirrors`` the trio on the
mirrored training classes too (:func:`~skfewshot.datasets.augment_mirrors`)
for half the epochs (its row records the default ``--epochs``, 40, which it
halves), and ``final-ink`` the trio on normalised drawings.
``--ensemble`` scores a :class:`~skfewshot.models.BackboneEnsemble` of backbones
saved by earlier ``--config`` runs (their L2-normalised features concatenated;
one name scores that backbone alone, e.g. ``--ensemble final``).
The ``-ink`` configurations (and ``final-ink``) moment-normalise every drawing
first (:class:`~skfewshot.datasets.InkNormalizer` on the 105 x 105 drawings,
then the resize): centred on its ink and scaled to the median radius of
small1's drawings, or to ``--ink-radius R`` (their backbones then saved as
``NAME-rR``; ``affine-ink-centre``: centred only); ``--ensemble`` of them
normalises the same way. ``affine-splices-ink`` trains on the spliced classes
too (:func:`~skfewshot.datasets.augment_splices`, drawn with ``--seed``; run
it with ``--epochs 20``), as do ``affine-elastic-splices-ink`` and
``protonet-affine-elastic-splices-ink`` (``--epochs 20``) and
``affine-rotation-splices-ink`` (``--epochs 10``), the recipe's members.
``--valid-alphabet NAME`` holds out another small1 alphabet for validation and
trains on the other four (backbones saved as ``NAME-vALPHABET``): a second
validation fold (Korean, 40 characters, as large as the test alphabets) for
choices that Early_Aramaic leaves undecided; the test alphabets stay small2's.
``--test-time-shifts S`` sets the TTA columns' shifts (default 1);
``--test-time-angles A ... --test-time-scales S ...`` add rotated and scaled
copies to them, every angle with every scale
(``BackboneTransformer(test_time_warps=...)``; ``--test-time-angles -10 0 10
--test-time-scales 0.9 1 1.1`` with one-pixel shifts gives 81 copies per
image).
``--device cuda`` trains and embeds on a GPU (the rows record the device; the
published CPU rows use the default, ``cpu``); ``benchmarks/omniglot_gpu.sh`` runs
the GPU rows and the test suite in one call on a lent GPU machine.
``--whiten A`` also scores every column with the features whitened by
:class:`~skfewshot.preprocessing.WithinClassWhitening` ``(shrinkage=A)``,
fitted on the base classes' features with the same test-time copies (the
training drawings and their rotations as classes, without mirrors or
splices): columns ``valid_whiten``, ``test_tta1_whiten`` and so on (the
recipe's evaluation since 2026-11-29: ``--whiten 10``).
``--transductive`` adds the transductive FineTunedCosine head on the
test-time-shift features, tuned on the validation alphabet (reported apart:
its queries are not classified alone).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

# the comparison's data and validation alphabet: one protocol for both benchmarks
from omniglot_meta_vs_finetune import VALID_ALPHABET, load_small, make_trainer

from skfewshot import PrototypeClassifier
from skfewshot._torch_utils import resolve_device
from skfewshot.backbone import BackboneTransformer
from skfewshot.datasets import (
    InkNormalizer,
    augment_mirrors,
    augment_rotations,
    augment_splices,
)
from skfewshot.datasets._augment import _augmented_by_orientation
from skfewshot.datasets._ink import _median_ink_radius
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import (
    BackboneEnsemble,
    Conv4,
    ResNet12,
    load_backbone,
    save_backbone,
)
from skfewshot.preprocessing import WithinClassWhitening
from skfewshot.recipes import (
    ONE_SHOT_INK_RADIUS,
    ONE_SHOT_MEMBERS,
    _test_time_warps,
    make_augmentation,
    make_head,
    pretrain_one_shot_ensemble,
)

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "benchmarks" / "_artifacts"
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
# the alphabets of images_background_small1, each a possible validation fold
SMALL1_ALPHABETS = ("Balinese", "Early_Aramaic", "Greek", "Korean", "Latin")
# the transductive head's grid, searched on the validation alphabet only
TRANSDUCTIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0)
TRANSDUCTIVE_ENTROPY = (0.1, 0.3, 1.0, 3.0)
CONFIGS = {
    # name: (trainer keyword arguments, teacher configuration); "hidden" is
    # Conv4's width, "arch": "resnet12" a ResNet12 instead, "image_size" the
    # side of the images (28 by default), "protonet" trains by ProtoNet
    # episodes instead, "mirrors" adds the left-right mirror image of every
    # training class (rotations included) as a new class, "splices" one class
    # per training class spliced from two of its alphabet in its orientation
    "shift-rotate": ({"augment": "shift-rotate"}, None),
    "affine": ({"augment": "affine"}, None),
    "affine-elastic": ({"augment": "affine-elastic"}, None),
    "affine-rotation": ({"augment": "affine", "rotation_loss_weight": 1.0}, None),
    "affine-distill": ({"augment": "affine"}, "affine"),
    "affine-mixup": ({"augment": "affine", "mixup_alpha": 1.0}, None),
    "affine-mixup-0.2": ({"augment": "affine", "mixup_alpha": 0.2}, None),
    "affine-mirrors": ({"augment": "affine", "mirrors": True}, None),
    "affine-contrastive": (
        {"augment": "affine", "contrastive_loss_weight": 1.0},
        None,
    ),
    "affine-wide": ({"augment": "affine", "hidden": 128}, None),
    "affine-32px": ({"augment": "affine", "image_size": 32}, None),
    "affine-56px": ({"augment": "affine", "image_size": 56}, None),
    "resnet12-affine": ({"augment": "affine", "arch": "resnet12"}, None),
    "resnet12-affine-elastic": (
        {"augment": "affine-elastic", "arch": "resnet12"},
        None,
    ),
    "protonet-affine": ({"augment": "affine", "protonet": True}, None),
    "protonet-affine-elastic": (
        {"augment": "affine-elastic", "protonet": True},
        None,
    ),
    # the drawings moment-normalised first (InkNormalizer at 105 x 105, then the
    # 28 x 28 resize): "ink" centres them on their ink and scales them to the
    # median radius of small1's drawings, "ink-centre" only centres them
    "affine-ink": ({"augment": "affine", "ink": "scale"}, None),
    "affine-ink-centre": ({"augment": "affine", "ink": "centre"}, None),
    "affine-elastic-ink": ({"augment": "affine-elastic", "ink": "scale"}, None),
    "affine-rotation-ink": (
        {"augment": "affine", "rotation_loss_weight": 1.0, "ink": "scale"},
        None,
    ),
    "protonet-affine-elastic-ink": (
        {"augment": "affine-elastic", "protonet": True, "ink": "scale"},
        None,
    ),
    # on the spliced classes too (augment_splices; run with --epochs 20: as
    # many forwards as 40 epochs of affine-ink)
    "affine-splices-ink": (
        {"augment": "affine", "ink": "scale", "splices": True},
        None,
    ),
    # the recipe's other members on the spliced classes (--epochs 20, and 10
    # for the rotation loss: as many forwards as their recipe's)
    "affine-elastic-splices-ink": (
        {"augment": "affine-elastic", "ink": "scale", "splices": True},
        None,
    ),
    "affine-rotation-splices-ink": (
        {
            "augment": "affine",
            "rotation_loss_weight": 1.0,
            "ink": "scale",
            "splices": True,
        },
        None,
    ),
    "protonet-affine-elastic-splices-ink": (
        {
            "augment": "affine-elastic",
            "protonet": True,
            "ink": "scale",
            "splices": True,
        },
        None,
    ),
    # its episodes drawn within one alphabet in one orientation
    "protonet-affine-elastic-within": (
        {"augment": "affine-elastic", "protonet": True, "within_groups": True},
        None,
    ),
}


# pretrain_one_shot_ensemble's default members until 2026-11-28, trained on the
# drawings as loaded: the rows of "final-trio" and of the variants measured then
TRIO = (
    {"augment": "affine", "rotation_loss_weight": 1.0, "max_epochs": 20},
    {"augment": "affine-elastic"},
    {
        "recipe": "protonet",
        "augment": "affine-elastic",
        "n_way": 20,
        "n_shot": 5,
        "n_query": 5,
    },
)

# ONE_SHOT_MEMBERS on prepare_one_shot_training's images, embedding without
# the Conv4s' last pool (the library's default)
_FINAL = {"ink": "scale", "ink_radius": ONE_SHOT_INK_RADIUS, "splices": True}

# the library's recipe and variants: name -> its settings, as CONFIGS'
# ("members": other members than ONE_SHOT_MEMBERS; "make_module": their
# network, default Conv4; "ink_radius": the --ink-radius it defaults to;
# "mirrors" or "splices": on those classes too, for half the epochs, the
# members' own max_epochs too, so as many forwards as without; "last_pool":
# pretrain_one_shot_ensemble's, default False; "seeds": every member trained
# from that many seeds, --seed, --seed + 1, ..., each for that fraction of the
# epochs, so as many forwards as one seed)
FINALS = {
    "final": _FINAL,
    # each member from two seeds, for half the epochs: four networks
    "final-seeds": {**_FINAL, "seeds": 2},
    # on 32 x 32 drawings: the fourth block's whole 4 x 4 map
    "final-32px": {**_FINAL, "image_size": 32},
    # two rounds of splices: three times the classes, a third of the epochs
    "final-splices2": {**_FINAL, "splices": 2},
    # the ProtoNet member's episodes within one alphabet in one orientation
    "final-within": {
        **_FINAL,
        "members": (
            ONE_SHOT_MEMBERS[0],
            {**ONE_SHOT_MEMBERS[1], "within_groups": True},
        ),
    },
    # the same networks embedding with it (the recipe until 2026-11-28)
    "final-pooled": {**_FINAL, "last_pool": True},
    # earlier recipes, as their rows were measured: with the last pool
    "final-trio": {"members": TRIO, "last_pool": True},
    "final-resnet12": {
        "members": TRIO,
        "make_module": partial(ResNet12, in_channels=1),
        "last_pool": True,
    },
    "final-mirrors": {"members": TRIO, "mirrors": True, "last_pool": True},
    "final-ink": {"members": TRIO, "ink": "scale", "last_pool": True},
}


def settings(config):
    """The settings of ``config``, a name of CONFIGS or FINALS ({} for None)."""
    return CONFIGS[config][0] if config in CONFIGS else FINALS.get(config, {})


def within_alphabet_1shot(features, y, groups, n_episodes, seed, head=None):
    scores = evaluate_episodes(
        PrototypeClassifier() if head is None else head,
        features,
        y,
        n_way=20,
        n_shot=1,
        n_query=15,
        n_episodes=n_episodes,
        groups=groups,
        within_groups=True,
        random_state=seed,
    )
    return [float(scores.mean), float(scores.ci95)]


def train(config, X, y, groups, args):
    """Train ``config`` on ``(X, y)``; ``groups``: each image's alphabet in its
    orientation, for the configurations with ``within_groups``."""
    params, teacher_config = dict(CONFIGS[config][0]), CONFIGS[config][1]
    # main loads the images at that size, and mirrors them
    params.pop("image_size", None)
    params.pop("mirrors", None)
    params.pop("splices", None)
    params.pop("ink", None)
    teacher = train(teacher_config, X, y, groups, args)[0] if teacher_config else None
    # the comparison's recipes (ProtoNet sees as many images per epoch as the
    # supervised ones) with this configuration's augmentation and booster
    trainer = make_trainer(
        "protonet" if params.pop("protonet", False) else "linear",
        len(X),
        args.epochs,
        args.seed,
        make_module=partial(
            ResNet12 if params.pop("arch", "conv4") == "resnet12" else Conv4,
            in_channels=1,
            **({"hidden": params.pop("hidden")} if "hidden" in params else {}),
        ),
    )
    trainer.set_params(
        augment=make_augmentation(params.pop("augment"), int(X.shape[-1])),
        device=args.device,
        verbose=0,
        **({"teacher": teacher} if teacher is not None else {}),
        **params,
    )
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(X, y, groups=groups if params.get("within_groups") else None)
    times = {
        "train_wall_s": time.perf_counter() - start,
        "train_cpu_s": time.process_time() - cpu,
    }
    print(f"[{config}] trained: {times}", flush=True)
    return trainer, times


def transductive(embed, X, y, groups, valid, X_te, y_te, g_te, args):
    """The transductive FineTunedCosine head on the TTA features, tuned on valid.

    Reported apart from the inductive numbers (each query is not classified
    alone): ``alpha`` and ``entropy_weight`` are chosen on the validation
    alphabet's episodes, then the test episodes are scored once.
    """
    F_val, F_te = embed.transform(X[valid]), embed.transform(X_te)
    grid = [
        {"alpha": a, "entropy_weight": e}
        for a in TRANSDUCTIVE_ALPHAS
        for e in TRANSDUCTIVE_ENTROPY
    ]
    scores = [
        within_alphabet_1shot(
            F_val,
            y[valid],
            groups[valid],
            200,
            args.seed + 1,
            make_head("transductive", device="cpu", **params),
        )[0]
        for params in grid
    ]
    best = grid[int(np.argmax(scores))]
    return {
        "transductive_valid_scores": dict(zip(map(str, grid), scores)),
        "transductive_params": best,
        "test_tta1_transductive": within_alphabet_1shot(
            F_te,
            y_te,
            g_te,
            args.episodes,
            args.seed,
            make_head("transductive", device="cpu", **best),
        ),
    }


def _spliced(X, y, groups, args):
    """The drawings and ``settings(args.config)["splices"]`` rounds of splices.

    Every round splices the drawings anew (:func:`augment_splices`, one new
    class per class; all rounds draw from one generator seeded with
    ``--seed``, so the first round is the recipe's splices), its classes and
    groups after those of the rounds before it.
    """
    rounds = int(settings(args.config)["splices"])
    rng = np.random.RandomState(args.seed)
    n, n_classes = len(X), int(y.max()) + 1
    X_parts, y_parts, g_parts = [X], [y], [groups * (rounds + 1)]
    for k in range(1, rounds + 1):
        X_parts.append(augment_splices(X, y, groups, random_state=rng)[0][n:])
        y_parts.append(y + k * n_classes)
        g_parts.append(groups * (rounds + 1) + k)
    return np.concatenate(X_parts), np.concatenate(y_parts), np.concatenate(g_parts)


def train_final(X, y, groups, args):
    """The library's recipe, :func:`~skfewshot.recipes.pretrain_one_shot_ensemble`."""
    members = FINALS[args.config].get("members", ONE_SHOT_MEMBERS)
    epochs = args.epochs
    # as many forwards as on the drawn classes alone
    blocks = (1 + bool(settings(args.config).get("mirrors"))) * (
        1 + int(settings(args.config).get("splices", 0))
    )
    if blocks > 1:
        members = [
            {**m, "max_epochs": m["max_epochs"] // blocks} if "max_epochs" in m else m
            for m in members
        ]
        epochs //= blocks
    seeds = FINALS[args.config].get("seeds", 1)
    if seeds > 1:
        members = [
            {
                **m,
                "random_state": args.seed + k,
                "max_epochs": m.get("max_epochs", epochs) // seeds,
            }
            for k in range(seeds)
            for m in members
        ]
    within = any(m.get("within_groups") for m in members)
    start, cpu = time.perf_counter(), time.process_time()
    ensemble, trainers = pretrain_one_shot_ensemble(
        X,
        y,
        groups=groups if within else None,
        members=members,
        make_module=FINALS[args.config].get("make_module"),
        max_epochs=epochs,
        random_state=args.seed,
        device=args.device,
        last_pool=FINALS[args.config].get("last_pool", False),
    )
    times = {
        "train_wall_s": time.perf_counter() - start,
        "train_cpu_s": time.process_time() - cpu,
    }
    print(f"[{args.config}] trained: {times}", flush=True)
    accuracies = [float(t.history_[-1, "train_acc"]) for t in trainers]
    return ensemble, times, accuracies


def load_both(args, image_size, ink):
    """small1 and small2 at ``image_size``, moment-normalised first with ``ink``.

    ``ink``: None (the drawings as loaded), ``"centre"`` or ``"scale"``
    (:class:`~skfewshot.datasets.InkNormalizer` on the 105 x 105 drawings, its
    ``radius`` ``args.ink_radius``, or by default the median of small1's,
    the lower middle value of the 2,720, then resized to ``image_size``).
    Returns small1's and small2's ``(X, y, groups, names)`` and the radius
    used (None when not scaled).
    """
    loaded = [
        load_small(subset, args.data_dir, None if ink else image_size)
        for subset in ("images_background_small1", "images_background_small2")
    ]
    if not ink:
        return *loaded, None
    radius = None
    if ink == "scale" and getattr(args, "ink_radius", None) is not None:
        radius = args.ink_radius
    elif ink == "scale":
        radius = _median_ink_radius(loaded[0][0])
    normaliser = InkNormalizer(radius=radius, image_size=image_size)
    return *[(normaliser.transform(X), *rest) for X, *rest in loaded], radius


def _artifact(name, args):
    """Where configuration ``name``'s backbone is saved: ``NAME-rR`` with
    ``--ink-radius R``, then ``-vALPHABET`` with another ``--valid-alphabet``
    (a backbone trained on other classes)."""
    radius = "" if args.ink_radius is None else f"-r{args.ink_radius:g}"
    valid = "" if args.valid_alphabet == VALID_ALPHABET else f"-v{args.valid_alphabet}"
    return ARTIFACTS / f"conv4_one_shot_{name}{radius}{valid}.pt"


def _device_name(device):
    """The processor that ``device`` names, as the JSON line records it."""
    resolved = resolve_device(device)  # where the trainers resolve it too
    if resolved.type == "cuda":
        return torch.cuda.get_device_name(resolved)
    return resolved.type


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", choices=(*CONFIGS, *FINALS))
    which.add_argument(
        "--ensemble",
        nargs="+",
        choices=(*CONFIGS, *FINALS),
        help="score saved backbones, their features concatenated (one name: "
        "that backbone alone)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "omniglot",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the backbones train and embed: cpu (the published CPU "
        "rows), cuda or auto",
    )
    parser.add_argument(
        "--test-time-shifts",
        type=int,
        default=1,
        metavar="S",
        help="the TTA columns' BackboneTransformer(test_time_shifts=S) "
        "(default: 1; the rows record S when it is not 1)",
    )
    parser.add_argument(
        "--transductive",
        action="store_true",
        help="also score the transductive FineTunedCosine head (tuned on "
        "validation) on the test-time-shift features",
    )
    parser.add_argument(
        "--test-time-angles",
        type=float,
        nargs="+",
        metavar="DEG",
        help="with --test-time-scales: the TTA columns' test_time_warps, every "
        "angle (degrees) with every scale, each copy then shifted",
    )
    parser.add_argument("--test-time-scales", type=float, nargs="+", metavar="S")
    parser.add_argument(
        "--whiten",
        type=float,
        metavar="A",
        help="also score every column's features whitened by "
        "WithinClassWhitening(shrinkage=A), fitted on the base classes' "
        "features (the training drawings and their rotations as classes; "
        "columns NAME_whiten)",
    )
    parser.add_argument(
        "--ink-radius",
        type=float,
        metavar="R",
        help="the scaled -ink configurations: the radius of gyration of every "
        "drawing's ink, as a fraction of the width, instead of the median of "
        "small1's (their backbones are saved as NAME-rR)",
    )
    parser.add_argument(
        "--valid-alphabet",
        choices=SMALL1_ALPHABETS,
        default=VALID_ALPHABET,
        help="the small1 alphabet held out for validation, the others trained "
        f"on (default {VALID_ALPHABET}; another one saves the backbones as "
        "NAME-vALPHABET): a second validation fold for choices that one "
        "alphabet leaves undecided",
    )
    args = parser.parse_args(argv)
    if args.test_time_shifts < 1:
        parser.error("--test-time-shifts must be at least 1 (the TTA columns)")
    if (args.test_time_angles is None) != (args.test_time_scales is None):
        parser.error("--test-time-angles and --test-time-scales go together")
    args.test_time_warps = _test_time_warps(
        args.test_time_angles, args.test_time_scales
    )
    torch.set_num_threads(args.threads)
    # a recipe's own radius (the backbones of one ensemble share theirs)
    presets = {settings(n).get("ink_radius") for n in args.ensemble or [args.config]}
    if args.ink_radius is None and len(presets - {None}) == 1:
        args.ink_radius = (presets - {None}).pop()
    if args.ensemble:
        loaded = [load_backbone(_artifact(name, args)) for name in args.ensemble]
        shapes = {meta["input_shape"] for _, meta in loaded}
        if len(shapes) > 1:
            parser.error(f"the members take images of different shapes: {shapes}")
        image_size = shapes.pop()[-1]
        inks = {settings(name).get("ink") for name in args.ensemble}
        if len(inks) > 1:
            parser.error(f"the members take differently normalised drawings: {inks}")
        ink = inks.pop()
    else:
        image_size = settings(args.config).get("image_size", 28)
        ink = settings(args.config).get("ink")
    if args.ink_radius is not None and ink != "scale":
        parser.error(
            "--ink-radius scales the drawings of the scaled -ink configurations"
        )
    small1, small2, radius = load_both(args, image_size, ink)
    X, y, groups, names = small1
    valid = groups == list(names).index(args.valid_alphabet)
    X_train, y_train, g_train = _augmented_by_orientation(
        augment_rotations, X[~valid], y[~valid], groups[~valid]
    )
    X_base, y_base = X_train, y_train  # what --whiten learns from
    if settings(args.config).get("mirrors"):
        X_train, y_train, g_train = _augmented_by_orientation(
            augment_mirrors, X_train, y_train, g_train
        )
    if settings(args.config).get("splices"):
        X_train, y_train, g_train = _spliced(X_train, y_train, g_train, args)
    X_te, y_te, g_te, names_te = small2
    keep = np.isin(names_te[g_te], TEST_ALPHABETS)
    X_te, y_te, g_te = X_te[keep], y_te[keep], g_te[keep]
    if args.ensemble:
        modules = [module for module, _ in loaded]
        backbone = modules[0] if len(modules) == 1 else BackboneEnsemble(modules)
        row = {"ensemble": args.ensemble, "epochs": args.epochs, "seed": args.seed}
    else:
        if args.config in FINALS:
            backbone, times, accuracies = train_final(X_train, y_train, g_train, args)
        else:
            trainer, times = train(args.config, X_train, y_train, g_train, args)
            backbone = trainer.backbone_
            accuracies = float(trainer.history_[-1, "train_acc"])
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        save_backbone(
            backbone,
            _artifact(args.config, args),
            input_shape=X.shape[1:],
        )
        row = {
            "config": args.config,
            "epochs": args.epochs,
            "seed": args.seed,
            "image_size": image_size,
            "threads": args.threads,
            **times,
            "final_train_acc": accuracies,
        }
        if args.config in FINALS:
            row["last_pool"] = FINALS[args.config].get("last_pool", False)
    row["device"] = _device_name(args.device)
    if args.valid_alphabet != VALID_ALPHABET:
        row["valid_alphabet"] = args.valid_alphabet
    if ink:
        row["ink"] = ink
        if radius is not None:
            row["ink_radius"] = radius
    if args.test_time_shifts != 1:
        row["test_time_shifts"] = args.test_time_shifts
    if args.test_time_warps:
        row["test_time_warps"] = args.test_time_warps
    if args.whiten is not None:
        row["whiten"] = args.whiten
    for shifts in (None, args.test_time_shifts):
        embed = BackboneTransformer(
            backbone.eval(),
            test_time_shifts=shifts,
            test_time_warps=None if shifts is None else args.test_time_warps,
            cache=False,
            device=args.device,
        ).fit(X[:1])
        tag = "" if shifts is None else "_tta1"
        features = {"": (embed.transform(X[valid]), embed.transform(X_te))}
        if args.whiten is not None:
            whiten = WithinClassWhitening(args.whiten)
            whiten.fit(embed.transform(X_base), y_base)
            features["_whiten"] = tuple(map(whiten.transform, features[""]))
        for suffix, (F_valid, F_test) in features.items():
            row["valid" + tag + suffix] = within_alphabet_1shot(
                F_valid, y[valid], groups[valid], 200, args.seed + 1
            )
            row["test" + tag + suffix] = within_alphabet_1shot(
                F_test, y_te, g_te, args.episodes, args.seed
            )
    if args.transductive:
        row.update(transductive(embed, X, y, groups, valid, X_te, y_te, g_te, args))
    print(json.dumps(row), flush=True)
    with open(ARTIFACTS / "omniglot_one_shot.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

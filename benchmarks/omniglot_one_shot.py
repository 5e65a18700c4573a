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
classified alone). Every configuration trains a Conv4 for the same number of epochs
(``--epochs``, default 40) with SGD, lr 0.05, batch 64, cosine schedule, seed 0;
test-time shifts (``BackboneTransformer(test_time_shifts=1)``) are scored for every
backbone. Results are appended to ``benchmarks/_artifacts/omniglot_one_shot.jsonl``
(one JSON line per configuration, with wall and CPU seconds).

Usage (from the repository root; one configuration per call, each a few minutes on
two idle CPU cores; ``affine-distill`` trains its teacher, ``affine``, first)::

    python benchmarks/omniglot_one_shot.py --config affine
    python benchmarks/omniglot_one_shot.py --config affine-distill
    python benchmarks/omniglot_one_shot.py --ensemble affine-distill affine-elastic

``--ensemble`` scores a :class:`~skfewshot.models.BackboneEnsemble` of backbones
saved by earlier ``--config`` runs (their L2-normalised features concatenated).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

# the comparison's data and validation alphabet: one protocol for both benchmarks
from omniglot_meta_vs_finetune import VALID_ALPHABET, load_small, make_trainer

from skfewshot import PrototypeClassifier
from skfewshot.backbone import BackboneTransformer
from skfewshot.datasets import augment_rotations
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import BackboneEnsemble, load_backbone, save_backbone
from skfewshot.recipes import make_augmentation

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "benchmarks" / "_artifacts"
TEST_ALPHABETS = ("Japanese_(katakana)", "Sanskrit", "Tagalog")
CONFIGS = {
    # name: (trainer keyword arguments, teacher configuration); "hidden" is
    # Conv4's width, "protonet" trains by ProtoNet episodes instead
    "shift-rotate": ({"augment": "shift-rotate"}, None),
    "affine": ({"augment": "affine"}, None),
    "affine-elastic": ({"augment": "affine-elastic"}, None),
    "affine-rotation": ({"augment": "affine", "rotation_loss_weight": 1.0}, None),
    "affine-distill": ({"augment": "affine"}, "affine"),
    "affine-wide": ({"augment": "affine", "hidden": 128}, None),
    "protonet-affine": ({"augment": "affine", "protonet": True}, None),
    "protonet-affine-elastic": (
        {"augment": "affine-elastic", "protonet": True},
        None,
    ),
}


def within_alphabet_1shot(features, y, groups, n_episodes, seed):
    scores = evaluate_episodes(
        PrototypeClassifier(),
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


def train(config, X, y, args):
    params, teacher_config = dict(CONFIGS[config][0]), CONFIGS[config][1]
    teacher = train(teacher_config, X, y, args)[0] if teacher_config else None
    # the comparison's recipes (ProtoNet sees as many images per epoch as the
    # supervised ones) with this configuration's augmentation and booster
    trainer = make_trainer(
        "protonet" if params.pop("protonet", False) else "linear",
        len(X),
        args.epochs,
        args.seed,
        hidden=params.pop("hidden", 64),
    )
    trainer.set_params(
        augment=make_augmentation(params.pop("augment")),
        verbose=0,
        **({"teacher": teacher} if teacher is not None else {}),
        **params,
    )
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(X, y)
    times = {
        "train_wall_s": time.perf_counter() - start,
        "train_cpu_s": time.process_time() - cpu,
    }
    print(f"[{config}] trained: {times}", flush=True)
    return trainer, times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", choices=tuple(CONFIGS))
    which.add_argument("--ensemble", nargs="+", choices=tuple(CONFIGS))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "omniglot",
    )
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    X, y, groups, names = load_small("images_background_small1", args.data_dir)
    valid = groups == list(names).index(VALID_ALPHABET)
    X_train, y_train = augment_rotations(X[~valid], y[~valid])
    X_te, y_te, g_te, names_te = load_small("images_background_small2", args.data_dir)
    keep = np.isin(names_te[g_te], TEST_ALPHABETS)
    X_te, y_te, g_te = X_te[keep], y_te[keep], g_te[keep]
    if args.ensemble:
        backbone = BackboneEnsemble(
            [
                load_backbone(ARTIFACTS / f"conv4_one_shot_{name}.pt")[0]
                for name in args.ensemble
            ]
        )
        row = {"ensemble": args.ensemble, "epochs": args.epochs, "seed": args.seed}
    else:
        trainer, times = train(args.config, X_train, y_train, args)
        backbone = trainer.backbone_
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        save_backbone(
            backbone,
            ARTIFACTS / f"conv4_one_shot_{args.config}.pt",
            input_shape=(1, 28, 28),
        )
        row = {
            "config": args.config,
            "epochs": args.epochs,
            "seed": args.seed,
            **times,
            "final_train_acc": float(trainer.history_[-1, "train_acc"]),
        }
    for shifts in (None, 1):
        embed = BackboneTransformer(
            backbone.eval(), test_time_shifts=shifts, cache=False, device="cpu"
        ).fit(X[:1])
        tag = "" if shifts is None else "_tta1"
        row["valid" + tag] = within_alphabet_1shot(
            embed.transform(X[valid]), y[valid], groups[valid], 200, args.seed + 1
        )
        row["test" + tag] = within_alphabet_1shot(
            embed.transform(X_te), y_te, g_te, args.episodes, args.seed
        )
    print(json.dumps(row), flush=True)
    with open(ARTIFACTS / "omniglot_one_shot.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

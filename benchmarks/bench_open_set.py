"""Open-set episodes: AUROC and known-class accuracy of the "unknown" answer.

Each episode has ``n_way`` support classes (15 queries each) plus 15 queries
of each of ``n_unknown_way`` classes outside the support; both library heads
run with ``unknown_label=-1`` and ``unknown_threshold="auto"``. Reported per
setting (mean ± 95% CI over the episodes): the AUROC of ``score_samples``
(known vs unknown queries), the accuracy on the known queries and the
open-set accuracy (all queries, unknown ones right when answered unknown).

Features:

* raw pixels (no backbone; floor numbers): scikit-learn's 8x8 digits
  (64 features; all 10 digits as 5-way + 5 unknown, and the novel digits 5-9
  as 3-way + 2 unknown) and Omniglot's novel alphabets (784 features);
* digits Conv4: the backbone of ``skfewshot demo``, trained by
  :func:`skfewshot.recipes.pretrain_demo_backbone` as the demo trains it
  (Conv4 pretrained on digits 0-4, 20 epochs), evaluated on the novel
  digits 5-9 as 3-way + 2 unknown, the only split five novel classes allow;
* Omniglot Conv4: supervised pretraining (linear head, the recipe and
  augmentation of ``benchmarks/omniglot_meta_vs_finetune.py``) on
  ``images_background_small1`` without its validation alphabets
  (Early_Aramaic and Balinese), rotations as extra classes, ``--epochs``
  epochs; tested on the small2 alphabets that small1 lacks (Japanese
  (katakana), Sanskrit, Tagalog: 106 characters), 5-way + 5 unknown.

``--validation`` instead runs the study that chose the threshold rule: on
the two held-out small1 alphabets only (46 characters, never the test
alphabets), the AUROC of three novelty scores and the open-set accuracy of
candidate threshold rules, each rule paired with the current one on the
same episodes (PrototypeClassifier's predictions).

Trained backbones are cached in ``$TMPDIR/skfewshot_bench_open_set`` under a
name holding their settings (``--no-cache`` retrains). Run from the
repository root::

    python benchmarks/bench_open_set.py --episodes 300 --seed 0
    python benchmarks/bench_open_set.py --validation --episodes 300 --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier, recipes
from skfewshot import model_selection as ms
from skfewshot._base import _AUTO_QUANTILE, _leave_one_out_scores
from skfewshot.datasets import (
    augment_rotations,
    load_omniglot,
    omniglot_shared_alphabets,
)
from skfewshot.models import load_backbone, save_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from omniglot_meta_vs_finetune import embed, machine, make_trainer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"
SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
#: small1 alphabets held out of training: the validation classes.
VALIDATION_ALPHABETS = ("Early_Aramaic", "Balinese")
CACHE = Path(tempfile.gettempdir()) / "skfewshot_bench_open_set"
N_QUERY = 15


def _cpu():
    return time.process_time()


# -- features ---------------------------------------------------------------


def omniglot_novel():
    """Images and labels of the small2 alphabets that small1 lacks."""
    shared = omniglot_shared_alphabets(
        SMALL2, SMALL1, path=DATA / f"{SMALL2}.zip", other_path=DATA / f"{SMALL1}.zip"
    )
    return load_omniglot(
        SMALL2, path=DATA / f"{SMALL2}.zip", exclude_alphabets=shared, return_X_y=True
    )


def omniglot_small1():
    """small1 as ``(train X, train y, validation X, validation y)``."""
    b = load_omniglot(SMALL1, path=DATA / f"{SMALL1}.zip")
    valid = np.isin(b.group_names[b.groups], VALIDATION_ALPHABETS)
    return b.data[~valid], b.target[~valid], b.data[valid], b.target[valid]


def omniglot_backbone(X, y, epochs, seed, use_cache):
    """Conv4 pretrained (linear head) on ``X, y`` with rotations; cached."""
    path = CACHE / f"omniglot_small1_noval_linear_rot_e{epochs}_s{seed}.pt"
    if use_cache and path.exists():
        backbone, _ = load_backbone(path)
        info = json.loads(path.with_suffix(".json").read_text())
        print(f"[omniglot] reused {path} (trained in {info['cpu_s']:.0f} CPU s)")
        return backbone.eval(), info
    X, y = augment_rotations(X, y)
    _, y = np.unique(y, return_inverse=True)
    trainer = make_trainer("linear", len(X), epochs, seed)
    print(f"[omniglot] training on {len(X)} images, {y.max() + 1} classes")
    cpu, wall = _cpu(), time.perf_counter()
    trainer.fit(X, y)
    info = {
        "cpu_s": _cpu() - cpu,
        "wall_s": time.perf_counter() - wall,
        "epochs": len(trainer.history_),
        "n_images": len(X),
        "n_classes": int(y.max() + 1),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    save_backbone(trainer.backbone_, path, input_shape=(1, 28, 28))
    path.with_suffix(".json").write_text(json.dumps(info))
    return trainer.backbone_.eval(), info


def digits_demo_features(seed, use_cache):
    """Features of the novel digits 5-9 from ``skfewshot demo``'s backbone.

    :func:`skfewshot.recipes.pretrain_demo_backbone` trains it exactly as
    :func:`skfewshot.recipes.run_demo` does, so it is the demo's, bit for bit.
    """
    path = CACHE / f"digits_demo_s{seed}.npz"
    if use_cache and path.exists():
        saved = np.load(path)
        print(f"[digits] reused {path} (trained in {saved['cpu_s']:.0f} CPU s)")
        return saved["F"], saved["y"], {"cpu_s": float(saved["cpu_s"])}
    cpu = _cpu()
    trainer, X_novel, y_novel = recipes.pretrain_demo_backbone(
        random_state=seed, verbose=0
    )
    F = embed(trainer.backbone_, X_novel)
    cpu_s = _cpu() - cpu
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, F=F, y=y_novel, cpu_s=cpu_s)
    return F, y_novel, {"cpu_s": cpu_s, "epochs": len(trainer.history_)}


# -- test tables ------------------------------------------------------------


def open_set_rows(name, X, y, n_way, n_unknown_way, episodes, seed):
    """One table row per head and shot count."""
    heads = {
        "PrototypeClassifier": PrototypeClassifier(unknown_label=-1),
        "FineTunedCosineClassifier": FineTunedCosineClassifier(unknown_label=-1),
    }
    for head_name, head in heads.items():
        for shots in (1, 5):
            cpu = _cpu()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # 1-shot guess
                s = ms.evaluate_episodes(
                    head, X, y, n_way=n_way, n_shot=shots, n_query=N_QUERY,
                    n_unknown_way=n_unknown_way, n_episodes=episodes,
                    random_state=seed,
                )  # fmt: skip
            print(
                f"| {name} | {n_way} + {n_unknown_way} | {head_name} | {shots} | "
                f"{s.auroc_mean:.3f} ± {s.auroc_ci95:.3f} | "
                f"{100 * s.known_mean:.1f} ± {100 * s.known_ci95:.1f} | "
                f"{100 * s.mean:.1f} ± {100 * s.ci95:.1f} | {_cpu() - cpu:.1f} |",
                flush=True,
            )


# -- validation study -------------------------------------------------------


def _balanced_threshold(known, unknown):
    """The threshold maximising the balanced accuracy between the two sets
    (known rows at or above it, unknown rows below), midpoint between the
    two scores where it is reached first."""
    cuts = np.unique(np.concatenate([known, unknown]))
    cands = np.concatenate([[cuts[0] - 1e-6], (cuts[1:] + cuts[:-1]) / 2])
    bal = [(known >= t).mean() + (unknown < t).mean() for t in cands]
    return float(cands[int(np.argmax(bal))])


def threshold_rules(known, unknown):
    """Candidate thresholds on the cosine score from the support alone."""
    rules = {}
    if known.size:
        for q in (0.0, 0.01, 0.05, 0.1, 0.2, 0.3):
            rules[f"LOO known {q:.0%} quantile"] = np.quantile(known, q)
        rules["midpoint of the means"] = (known.mean() + unknown.mean()) / 2
        rules["midpoint of the medians"] = (np.median(known) + np.median(unknown)) / 2
        rules["max balanced accuracy"] = _balanced_threshold(known, unknown)
    else:
        for q in (0.0, 0.25, 0.5, 0.75, 0.9, 1.0):
            rules[f"unknown {q:.0%} quantile"] = np.quantile(unknown, q)
    return rules


def _ci95(values):
    values = np.asarray(values)
    return 1.96 * values.std(ddof=1) / np.sqrt(len(values))


def validation_study(F, y, episodes, seed):
    """AUROC of three scores and open-set accuracy of the threshold rules."""
    current = {
        1: "unknown 100% quantile",
        5: f"LOO known {_AUTO_QUANTILE:.0%} quantile",
    }
    for shots in (1, 5):
        cv = ms.EpisodicSplit(5, n_shot=shots, n_query=N_QUERY, n_unknown_way=5,
                              n_episodes=episodes, random_state=seed)  # fmt: skip
        auroc = {"cosine to nearest prototype": [], "margin of the two nearest": [],
                 "max predict_proba (Prototype)": [],
                 "max predict_proba (FineTuned)": []}  # fmt: skip
        metrics = {}  # rule -> list of per-episode metric tuples
        for support, query in cv.split(F, y):
            clf = PrototypeClassifier().fit(F[support], y[support])
            Q = F[query]
            is_known = np.isin(y[query], clf.classes_)
            cos = clf.decision_function(Q) / clf.scale
            top = np.sort(cos, axis=1)
            pred = clf.classes_[np.argmax(cos, axis=1)]
            ft = FineTunedCosineClassifier().fit(F[support], y[support])
            for key, score in (
                ("cosine to nearest prototype", top[:, -1]),
                ("margin of the two nearest", top[:, -1] - top[:, -2]),
                ("max predict_proba (Prototype)", clf.predict_proba(Q).max(1)),
                ("max predict_proba (FineTuned)", ft.predict_proba(Q).max(1)),
            ):
                auroc[key].append(roc_auc_score(is_known, score))
            codes = np.searchsorted(clf.classes_, y[support])
            known, unknown = _leave_one_out_scores(
                F[support], codes, len(clf.classes_), np.ones(len(support))
            )
            truth = np.where(is_known, y[query], -1)
            rules = {"no rejection": -np.inf, **threshold_rules(known, unknown)}
            for rule, t in rules.items():
                answer = np.where(top[:, -1] < t, -1, pred)
                metrics.setdefault(rule, []).append(
                    (
                        np.mean(answer[is_known] == truth[is_known]),
                        np.mean(answer[is_known] == -1),
                        np.mean(answer[~is_known] == -1),
                        np.mean(answer == truth),
                    )
                )
        print(f"\n### validation, 5-way + 5 unknown, {shots} shot(s), {episodes} ep.")
        print("| score | AUROC |\n| --- | --- |")
        for key, values in auroc.items():
            print(f"| {key} | {np.mean(values):.3f} ± {_ci95(values):.3f} |")
        base = np.array(metrics[current[shots]])[:, 3]
        print(
            "| rule | known acc. | known rejected | unknown rejected | open-set acc. "
            "| vs current (paired) |\n| --- | --- | --- | --- | --- | --- |"
        )
        for rule, values in metrics.items():
            values = 100 * np.array(values)
            cells = [f"{v.mean():.1f} ± {_ci95(v):.1f}" for v in values.T]
            d = values[:, 3] - 100 * base
            print(
                f"| {rule}{' (current)' if rule == current[shots] else ''} | "
                f"{' | '.join(cells)} | {d.mean():+.1f} ± {_ci95(d):.1f} |",
                flush=True,
            )


# -- main --------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=25,
                        help="Omniglot pretraining epochs")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--validation",
        action="store_true",
        help="run the threshold study on the validation alphabets",
    )
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    start = _cpu()
    X1, y1, X_val, y_val = omniglot_small1()
    backbone, info = omniglot_backbone(X1, y1, args.epochs, args.seed, args.cache)
    print(f"[omniglot] {info}")
    if args.validation:
        validation_study(embed(backbone, X_val), y_val, args.episodes, args.seed)
        print(f"\ntotal {_cpu() - start:.0f} CPU s")
        return
    X_te, y_te = omniglot_novel()
    F_digits, y_digits, dinfo = digits_demo_features(args.seed, args.cache)
    print(f"[digits] {dinfo}")
    Xd, yd = load_digits(return_X_y=True)
    novel = yd >= 5
    print("| data | way + unknown | head | shots | AUROC | known acc. | open-set acc. "
          "| cpu s |\n| --- | --- | --- | --- | --- | --- | --- | --- |")  # fmt: skip
    ep, seed = args.episodes, args.seed
    open_set_rows("digits 0-9, 64 px", Xd, yd, 5, 5, ep, seed)
    open_set_rows("digits 5-9, 64 px", Xd[novel], yd[novel], 3, 2, ep, seed)
    open_set_rows("digits 5-9, Conv4 (demo)", F_digits, y_digits, 3, 2, ep, seed)
    flat = X_te.reshape(len(X_te), -1)
    open_set_rows("Omniglot novel, 784 px", flat, y_te, 5, 5, ep, seed)
    open_set_rows("Omniglot novel, Conv4", embed(backbone, X_te), y_te, 5, 5, ep, seed)
    print(f"\ntotal {_cpu() - start:.0f} CPU s")


if __name__ == "__main__":
    main()

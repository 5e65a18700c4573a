"""Meta-learning vs fine-tuning on Omniglot: ProtoNet vs supervised pretraining.

Three Conv4 backbones are trained on ``images_background_small1`` (with the
90/180/270-degree rotations as extra classes) under the same budget (the same
number of images through the network, the same augmentation, a cosine
learning-rate schedule):

* ``protonet``: prototypical-network meta-training (Snell et al., 2017);
* ``linear``: supervised pretraining with a linear head (Chen et al.'s Baseline);
* ``cosine``: supervised pretraining with a cosine head (Baseline++).

One alphabet of small1 (all its rotations) is held out as validation classes;
it is used only to choose the heads' hyper-parameters (``alpha`` and the
transductive ``entropy_weight`` of FineTunedCosineClassifier, ``C`` of the
logistic regression) with ``GridSearchCV`` over ``EpisodicSplit``. Nothing is
tuned on the test classes.

small1 and small2 share two alphabets (Greek and Latin: the same images), so
the test classes are the small2 alphabets small1 lacks (Japanese (katakana),
Sanskrit, Tagalog: 106 characters). Each backbone embeds them once;
every head is then evaluated on the same 600 episodes (same ``random_state``)
of 5-way 1-shot, 5-way 5-shot, 20-way 1-shot, 20-way 5-shot and within-alphabet
20-way 1-shot (all 20 classes of an episode from one alphabet), 15 queries per
class. Heads: PrototypeClassifier, FineTunedCosineClassifier (inductive and
transductive) and scikit-learn's LogisticRegression on L2-normalised features.

Outputs: a table on stdout, ``benchmarks/_artifacts/omniglot_meta_vs_finetune.json``,
the trained backbones ``benchmarks/_artifacts/conv4_small1_<recipe>.pt`` (reused
with ``--reuse``), ``docs/benchmarks_omniglot.rst`` and
``docs/_static/omniglot_meta_vs_finetune.png``.

``--train-on-both`` instead trains one recipe on small1 + small2 together
(their eight distinct alphabets, no held-out classes) and saves it with
``save_backbone`` for the published 20-run benchmark. The default recipe,
``final``, is issue 14's ensemble (see ``train_final`` and
``omniglot_one_shot.py``: two trainings on normalised, rotated and spliced
drawings, recorded in the backbone file so that ``skfewshot runs``
normalises the runs' drawings alike; on about twice small1's images, so about
twice the recipe's time on small1), evaluated with test-time shifts and its
features whitened by the training drawings (``whiten_backbone``; saved beside
it as ``conv4_small12_final-w.pt``)::

    skfewshot runs --runs PATH/TO/runs --test-time-shifts 1 --backbone \
        benchmarks/_artifacts/conv4_small12_final-w.pt

Run from the repository root (9 minutes on an idle 2-core CPU; 3-5x more when
the machine is shared: lower ``--epochs`` there)::

    PYTHONUNBUFFERED=1 python benchmarks/omniglot_meta_vs_finetune.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.model_selection import GridSearchCV

from skfewshot._torch_utils import seeded_init
from skfewshot.augment import RandomAffine
from skfewshot.backbone import BackboneTransformer
from skfewshot.datasets import InkNormalizer, augment_rotations, load_omniglot
from skfewshot.model_selection import EpisodicSplit, evaluate_episodes
from skfewshot.models import Conv4, load_backbone, save_backbone
from skfewshot.recipes import (
    HEAD_LABELS,
    HEADS,
    ONE_SHOT_INK_RADIUS,
    make_head,
    prepare_one_shot_training,
    pretrain_one_shot_ensemble,
    whiten_backbone,
)
from skfewshot.training import ProtoNetMetaTrainer, SupervisedPretrainer

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "benchmarks" / "_artifacts"
RST = REPO / "docs" / "benchmarks_omniglot.rst"
PNG = REPO / "docs" / "_static" / "omniglot_meta_vs_finetune.png"

RECIPES = ("protonet", "linear", "cosine")
# column labels of the timing table (the heads are skfewshot.recipes.HEADS)
SHORT = {
    "prototype": "Prototype",
    "finetune": "FT inductive",
    "transductive": "FT transductive",
    "logreg": "LogReg",
}
# (n_way, n_shot, within_groups)
COLUMNS = ((5, 1, False), (5, 5, False), (20, 1, False), (20, 5, False), (20, 1, True))
N_QUERY = 15
VALID_ALPHABET = "Early_Aramaic"  # the smallest small1 alphabet (22 characters)

# grids searched on the validation classes only
ALPHA_GRID = (1e-3, 1e-2, 1e-1, 1.0)
ENTROPY_GRID = (0.1, 0.3, 1.0)
C_GRID = (0.1, 1.0, 10.0, 100.0)


def column_name(n_way, n_shot, within):
    return f"{n_way}-way {n_shot}-shot" + (" within" if within else "")


def make_trainer(recipe, n_train, budget, seed, make_module=Conv4):
    """The trainer of ``recipe`` with ``budget`` epochs' worth of images.

    Every recipe sees ``budget * n_train`` images: supervised recipes in
    ``budget`` epochs of mini-batches, ProtoNet in ``budget`` epochs of
    episodes of 20-way 5-shot 5-query (200 images each). The backbone is
    ``make_module()`` (a ``Conv4()`` by default), built with torch seeded by
    ``seed`` so its initial weights are too (the trainers seed only their own
    draws: before this, every run started from other weights).
    """
    module = seeded_init(make_module, seed)
    common = dict(
        max_epochs=budget,
        lr_schedule="cosine",
        augment=RandomAffine(degrees=10.0, translate=2 / 28),  # 2 px of 28
        device="cpu",
        verbose=1,
        random_state=seed,
    )
    if recipe == "protonet":
        n_way, n_shot, n_query = 20, 5, 5
        return ProtoNetMetaTrainer(
            module,
            n_way=n_way,
            n_shot=n_shot,
            n_query=n_query,
            episodes_per_epoch=max(1, round(n_train / (n_way * (n_shot + n_query)))),
            lr=1e-3,
            optimizer="adam",
            metric="euclidean",
            **common,
        )
    return SupervisedPretrainer(
        module,
        head=recipe,
        batch_size=64,
        lr=0.05,
        optimizer="sgd",
        weight_decay=5e-4,
        **common,
    )


def train_or_load(recipe, X, y, path, args):
    """Train (or, with ``--reuse``, load) one backbone; return it and its record."""
    info_path = path.with_suffix(".json")
    if args.reuse and path.exists() and info_path.exists():
        backbone, _ = load_backbone(path)
        info = json.loads(info_path.read_text())
        print(f"[{recipe}] reused {path.name} (trained in {info['train_s']:.0f} s)")
        return backbone.eval(), info
    trainer = make_trainer(recipe, len(X), args.epochs, args.seed)
    print(f"[{recipe}] training on {len(X)} images, {len(np.unique(y))} classes")
    start = time.perf_counter()
    trainer.fit(X, y)
    train_s = time.perf_counter() - start
    history = trainer.history_
    info = {
        "recipe": recipe,
        "epochs": int(len(history)),
        "steps": int(sum(history[:, "train_batch_count"])),
        "images_seen": int(
            len(history)
            * (
                trainer.episodes_per_epoch
                * trainer.n_way
                * (trainer.n_shot + trainer.n_query)
                if recipe == "protonet"
                else len(X)
            )
        ),
        "train_s": train_s,
        "final_train_loss": float(history[-1, "train_loss"]),
        "final_train_acc": float(history[-1, "train_acc"]),
        "params": {
            k: v
            for k, v in trainer.get_params(deep=False).items()
            if isinstance(v, int | float | str)
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_backbone(trainer.backbone_, path, input_shape=(1, 28, 28))
    info_path.write_text(json.dumps(info, indent=2))
    print(f"[{recipe}] trained in {train_s:.0f} s, saved {path}")
    return trainer.backbone_, info


def embed(backbone, X, batch_size=512):
    """Features of X: the package's BackboneTransformer, without the cache."""
    features = BackboneTransformer(backbone, batch_size=batch_size, cache=False)
    return features.fit(X[:1]).transform(X)


def choose_head_params(F_val, y_val, args):
    """Grid-search every head's hyper-parameters on validation episodes."""
    cv = EpisodicSplit(
        n_way=20,
        n_shot=1,
        n_query=N_QUERY,
        n_episodes=args.val_episodes,
        random_state=args.seed + 1,
    )

    def search(estimator, grid):
        gs = GridSearchCV(estimator, grid, cv=cv, refit=False, n_jobs=args.n_jobs)
        gs.fit(F_val, y_val)
        scores = dict(
            zip(
                [str(p) for p in gs.cv_results_["params"]],
                np.round(gs.cv_results_["mean_test_score"], 4).tolist(),
            )
        )
        return gs.best_params_, scores

    alpha, alpha_scores = search(
        make_head("finetune", device="cpu"), {"alpha": list(ALPHA_GRID)}
    )
    entropy, entropy_scores = search(
        make_head("transductive", alpha=alpha["alpha"], device="cpu"),
        {"entropy_weight": list(ENTROPY_GRID)},
    )
    c, c_scores = search(make_head("logreg"), {"logisticregression__C": list(C_GRID)})
    return {
        "alpha": alpha["alpha"],
        "entropy_weight": entropy["entropy_weight"],
        "C": c["logisticregression__C"],
        "validation_scores": {
            "alpha": alpha_scores,
            "entropy_weight": entropy_scores,
            "C": c_scores,
        },
    }


def make_heads(params):
    """The heads of skfewshot.recipes, with the hyper-parameters tuned on validation."""
    tuned = {
        "prototype": {},
        "finetune": {"alpha": params["alpha"], "device": "cpu"},
        "transductive": {
            "alpha": params["alpha"],
            "entropy_weight": params["entropy_weight"],
            "device": "cpu",
        },
        "logreg": {"C": params["C"]},
    }
    return {name: make_head(name, **tuned[name]) for name in HEADS}


def evaluate_backbone(recipe, features, y, groups, params, args):
    rows = []
    for head_name, head in make_heads(params).items():
        for n_way, n_shot, within in COLUMNS:
            n_episodes = (
                args.trans_episodes if head_name == "transductive" else args.episodes
            )
            start = time.perf_counter()
            scores = evaluate_episodes(
                head,
                features,
                y,
                n_way=n_way,
                n_shot=n_shot,
                n_query=N_QUERY,
                n_episodes=n_episodes,
                groups=groups if within else None,
                within_groups=within,
                random_state=args.seed,
                n_jobs=args.n_jobs,
            )
            elapsed = time.perf_counter() - start
            rows.append(
                {
                    "recipe": recipe,
                    "head": head_name,
                    "column": column_name(n_way, n_shot, within),
                    "n_way": n_way,
                    "n_shot": n_shot,
                    "within_groups": within,
                    "n_episodes": n_episodes,
                    "mean": float(scores.mean),
                    "ci95": float(scores.ci95),
                    "ms_per_episode": 1e3 * elapsed / n_episodes,
                }
            )
            print(
                f"[{recipe}] {HEAD_LABELS[head_name]:36s} "
                f"{rows[-1]['column']:22s} {100 * scores.mean:5.1f} ± "
                f"{100 * scores.ci95:.1f} %  ({rows[-1]['ms_per_episode']:.1f} "
                "ms/episode)",
                flush=True,
            )
    return rows


# -- reporting ---------------------------------------------------------------


def rst_table(header, rows):
    """A reStructuredText grid table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(ch):
        return "+" + "+".join(ch * (w + 2) for w in widths) + "+"

    def fmt(r):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"

    out = [line("-"), fmt(header), line("=")]
    for r in rows:
        out += [fmt(r), line("-")]
    return "\n".join(out)


def results_table(rows, trainings):
    header = ["Backbone", "Head"] + [column_name(*c) for c in COLUMNS]
    body = []
    best = {}
    for r in rows:
        if r["mean"] > best.get(r["column"], -1):
            best[r["column"]] = r["mean"]
    for recipe in RECIPES:
        if recipe not in trainings:
            continue
        for head in HEADS:
            cells = [recipe, HEAD_LABELS[head]]
            for c in COLUMNS:
                (r,) = [
                    r
                    for r in rows
                    if r["recipe"] == recipe
                    and r["head"] == head
                    and r["column"] == column_name(*c)
                ]
                cell = f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}"
                if r["mean"] == best[r["column"]]:
                    cell = f"**{cell}**"
                cells.append(cell)
            body.append(cells)
    return header, body


def timing_table(rows, trainings):
    header = ["Backbone"] + [f"{SHORT[h]} (ms/episode)" for h in HEADS]
    body = []
    for recipe in RECIPES:
        if recipe not in trainings:
            continue
        cells = [recipe]
        for head in HEADS:
            ms = [
                r["ms_per_episode"]
                for r in rows
                if r["recipe"] == recipe and r["head"] == head
            ]
            cells.append(f"{np.mean(ms):.1f}")
        body.append(cells)
    return header, body


def plot(rows, trainings, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = [r for r in RECIPES if r in trainings]
    fig, axes = plt.subplots(
        1, len(COLUMNS), figsize=(4 * len(COLUMNS), 4.2), sharey=False
    )
    colors = plt.get_cmap("tab10").colors
    width = 0.8 / len(HEADS)
    for ax, col in zip(axes, COLUMNS):
        name = column_name(*col)
        lows = []
        for j, head in enumerate(HEADS):
            means, cis = [], []
            for recipe in recipes:
                (r,) = [
                    r
                    for r in rows
                    if r["recipe"] == recipe
                    and r["head"] == head
                    and r["column"] == name
                ]
                means.append(100 * r["mean"])
                cis.append(100 * r["ci95"])
            lows.append(min(m - c for m, c in zip(means, cis)))
            x = np.arange(len(recipes)) + (j - (len(HEADS) - 1) / 2) * width
            ax.bar(
                x,
                means,
                width,
                yerr=cis,
                capsize=2,
                color=colors[j],
                label=HEAD_LABELS[head],
            )
        ax.set_xticks(np.arange(len(recipes)), recipes)
        ax.set_title(name.replace(" within", " (within alphabet)"))
        ax.set_ylim(max(0, min(lows) - 5), 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy on small2 (%, mean ± 95% CI)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(HEADS), frameon=False)
    fig.suptitle(
        "Omniglot, Conv4 trained on small1, tested on the small2 alphabets small1 "
        "lacks: meta-learning (protonet) vs supervised pretraining (linear, cosine)"
    )
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def training_table(payload):
    header = [
        "Backbone",
        "Epochs",
        "Optimizer steps",
        "Images seen",
        "Training (s)",
        "Final train acc.",
        "Valid. 20-way 1-shot (Prototype)",
        "alpha",
        "entropy_weight",
        "C",
    ]
    body = []
    for recipe, t in payload["trainings"].items():
        p = payload["head_params"][recipe]
        body.append(
            [
                recipe,
                t["epochs"],
                t["steps"],
                t["images_seen"],
                f"{t['train_s']:.0f}",
                f"{100 * t['final_train_acc']:.1f}",
                f"{100 * p['valid_prototype_20w1s']:.1f}",
                p["alpha"],
                p["entropy_weight"],
                p["C"],
            ]
        )
    return header, body


RST_BEGIN = ".. results-begin: written by benchmarks/omniglot_meta_vs_finetune.py"
RST_END = ".. results-end"

RST_TEMPLATE = """\
.. _benchmarks_omniglot:

Omniglot: meta-learning vs fine-tuning
======================================

{begin}
{end}
"""


def rst_results(payload):
    """The generated part of the docs page: setup, tables and figure."""
    rows, trainings = payload["results"], payload["trainings"]
    n_eps = sorted({r["n_episodes"] for r in rows})
    trans_eps = {r["n_episodes"] for r in rows if r["head"] == "transductive"}
    lines = [
        f"*Machine*: {payload['machine']}. *Seed*: {payload['seed']}. *Total "
        f"wall time* (three trainings, validation searches and all evaluations): "
        f"{payload['total_s'] / 60:.1f} min.",
        "",
        "*Command* (from the repository root)::",
        "",
        f"    PYTHONUNBUFFERED=1 {payload['command']}",
        "",
        "Training (same budget for every backbone; validation classes: the "
        f"{payload['validation_alphabet']} alphabet of small1 with its rotations; "
        "``alpha``, ``entropy_weight`` and ``C`` chosen there by ``GridSearchCV`` "
        "over 20-way 1-shot ``EpisodicSplit`` episodes):",
        "",
        rst_table(*training_table(payload)),
        "",
        f"Accuracy (%) on small2, mean ± 95% confidence half-width over "
        f"{' / '.join(map(str, n_eps))} episodes of {payload['n_query']} queries "
        "per class"
        + (
            f" (the transductive head: {' / '.join(map(str, sorted(trans_eps)))} "
            "episodes)"
            if len(n_eps) > 1
            else ""
        )
        + "; every head sees the same episodes. Bold: best of the column. "
        "*within*: the 20 classes of an episode come from one alphabet.",
        "",
        rst_table(*results_table(rows, trainings)),
        "",
        "Wall time per episode (ms, mean over the five columns, two joblib "
        "workers, features precomputed: one backbone pass per image):",
        "",
        rst_table(*timing_table(rows, trainings)),
        "",
        ".. image:: _static/omniglot_meta_vs_finetune.png",
        "   :alt: Accuracy per test setting, backbone and head, with 95% "
        "confidence intervals",
        "",
    ]
    return "\n".join(lines)


def write_rst(payload, path):
    """Write the generated block into ``path``, keeping any prose around it."""
    text = (
        path.read_text()
        if path.exists()
        else RST_TEMPLATE.format(begin=RST_BEGIN, end=RST_END)
    )
    if RST_BEGIN not in text or RST_END not in text:
        raise ValueError(f"{path} lacks the markers {RST_BEGIN!r} / {RST_END!r}.")
    head, rest = text.split(RST_BEGIN, 1)
    _, tail = rest.split(RST_END, 1)
    path.write_text(
        head + RST_BEGIN + "\n\n" + rst_results(payload) + "\n" + RST_END + tail
    )


def report(payload, docs=True):
    """Print the tables; with ``docs``, write the plot and the docs page."""
    rows, trainings = payload["results"], payload["trainings"]
    print()
    print(rst_table(*training_table(payload)))
    print()
    print(rst_table(*results_table(rows, trainings)))
    print()
    print(rst_table(*timing_table(rows, trainings)))
    print(f"\ntotal {payload['total_s'] / 60:.1f} min")
    if docs:
        plot(rows, trainings, PNG)
        write_rst(payload, RST)
        print(f"wrote {PNG} and {RST}")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}, "
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}"
    )


# -- main --------------------------------------------------------------------


def load_small(subset, data_dir, image_size=28):
    b = load_omniglot(subset, path=data_dir, image_size=image_size)
    return b.data, b.target, b.groups, b.group_names


def run_comparison(args):
    X, y, groups, names = load_small("images_background_small1", args.data_dir)
    valid = groups == list(names).index(VALID_ALPHABET)
    X_tr, y_tr = augment_rotations(X[~valid], y[~valid])
    X_val, y_val = augment_rotations(X[valid], y[valid])
    X_te, y_te, g_te, names_te = load_small("images_background_small2", args.data_dir)
    # small1 and small2 share two alphabets (Greek and Latin, the same images):
    # test only on the small2 alphabets that small1 lacks
    shared = sorted(set(names) & set(names_te))
    test_alphabets = [a for a in names_te if a not in shared]
    keep = np.isin(names_te[g_te], test_alphabets)
    X_te, y_te, g_te = X_te[keep], y_te[keep], g_te[keep]
    print(
        f"train: {len(np.unique(y_tr))} classes ({len(X_tr)} images); validation: "
        f"{VALID_ALPHABET}, {len(np.unique(y_val))} classes; test (small2 without "
        f"{', '.join(shared)}, which small1 holds too): {len(np.unique(y_te))} "
        f"classes ({len(X_te)} images) in {', '.join(test_alphabets)}"
    )
    trainings, params, rows = {}, {}, []
    total_start = time.perf_counter()
    for recipe in args.recipes:
        path = ARTIFACTS / f"conv4_small1_{recipe}.pt"
        backbone, trainings[recipe] = train_or_load(recipe, X_tr, y_tr, path, args)
        torch.set_num_threads(1)  # evaluation parallelises over episodes instead
        start = time.perf_counter()
        F_val, F_te = embed(backbone, X_val), embed(backbone, X_te)
        params[recipe] = choose_head_params(F_val, y_val, args)
        params[recipe]["valid_prototype_20w1s"] = float(
            evaluate_episodes(
                make_head("prototype"),
                F_val,
                y_val,
                n_way=20,
                n_shot=1,
                n_query=N_QUERY,
                n_episodes=args.val_episodes,
                random_state=args.seed + 1,
            ).mean
        )
        print(
            f"[{recipe}] chosen on validation: "
            f"{ {k: v for k, v in params[recipe].items() if k != 'validation_scores'} }"
        )
        rows += evaluate_backbone(recipe, F_te, y_te, g_te, params[recipe], args)
        trainings[recipe]["eval_s"] = time.perf_counter() - start
        torch.set_num_threads(args.threads)
    total_s = time.perf_counter() - total_start
    payload = {
        "command": " ".join(
            ["python", "benchmarks/omniglot_meta_vs_finetune.py", *sys.argv[1:]]
        ),
        "machine": machine(),
        "seed": args.seed,
        "validation_alphabet": VALID_ALPHABET,
        "test_alphabets": test_alphabets,
        "excluded_shared_alphabets": shared,
        "n_test_classes": int(len(np.unique(y_te))),
        "n_query": N_QUERY,
        "total_s": total_s,
        "trainings": trainings,
        "head_params": params,
        "results": rows,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / "omniglot_meta_vs_finetune.json"
    out.write_text(json.dumps(payload, indent=2))
    report(payload, docs=args.docs)
    print(f"results in {out}")
    return payload


def train_final(X, y, groups, args):
    """Issue 14's recipe, the ensemble the one-shot ablation chose on validation.

    :func:`skfewshot.recipes.pretrain_one_shot_ensemble` with its default
    members (``ONE_SHOT_MEMBERS``: an ``affine-elastic`` pretrained network
    and an ``affine-elastic`` ProtoNet, 20-way 5-shot 5-query episodes, as
    many images per epoch) for half of ``--epochs``, on the images
    :func:`~skfewshot.recipes.prepare_one_shot_training` makes of the
    full-resolution drawings ``X`` (ink normalised to radius
    ``ONE_SHOT_INK_RADIUS``, rotated, spliced within each alphabet of
    ``groups``: twice the classes, so as many forwards); their features
    concatenated, evaluated with ``--test-time-shifts 1`` on drawings
    normalised alike. Two ``skfewshot train`` runs and ``skfewshot ensemble``
    give the same recipe.
    """
    X, y, _ = prepare_one_shot_training(X, y, groups, random_state=args.seed)
    return pretrain_one_shot_ensemble(
        X,
        y,
        max_epochs=args.epochs // 2,
        random_state=args.seed,
        device="cpu",
        verbose=1,
    )[0]


def run_train_on_both(args):
    final = args.recipe == "final"
    Xs, ys, gs = [], [], []
    offset, seen = 0, set()
    subsets = ("images_background_small1", "images_background_small2")
    for subset in subsets:
        # the recipe normalises the full-resolution drawings itself
        X, y, groups, names = load_small(
            subset, args.data_dir, image_size=None if final else 28
        )
        # Greek and Latin are in both subsets (the same images): take them once
        keep = ~np.isin(names[groups], sorted(seen))
        seen.update(names)
        _, y = np.unique(y[keep], return_inverse=True)
        Xs.append(X[keep])
        ys.append(y + offset)
        gs.append(names[groups[keep]])
        offset += int(y.max()) + 1
    X, y, groups = np.concatenate(Xs), np.concatenate(ys), np.concatenate(gs)
    recipe = args.recipe
    path = ARTIFACTS / f"conv4_small12_{recipe}.pt"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    trained_on = {"dataset": "omniglot", "subset": list(subsets)}
    if not final:
        X, y = augment_rotations(X, y)
        backbone = train_or_load(recipe, X, y, path, args)[0]
        save_backbone(backbone, path, input_shape=(1, 28, 28), trained_on=trained_on)
        print(f"evaluate with: skfewshot runs --runs PATH --backbone {path}")
        return
    start = time.perf_counter()
    backbone = train_final(X, y, groups, args)
    # skfewshot runs reads the drawings at 105 x 105 and normalises them alike
    trained_on["ink_normalizer"] = {"radius": ONE_SHOT_INK_RADIUS, "resolution": 105}
    save_backbone(backbone, path, input_shape=(1, 28, 28), trained_on=trained_on)
    print(f"[final] trained in {time.perf_counter() - start:.0f} s, saved {path}")
    # the recipe's evaluation: features whitened by the training drawings and
    # their rotations as classes (not the splices), with the same test-time
    # shifts; skfewshot whiten does the same from the file
    start = time.perf_counter()
    normalizer = InkNormalizer(radius=ONE_SHOT_INK_RADIUS, image_size=28)
    X_base, y_base = augment_rotations(normalizer.transform(X), y)
    embedding = BackboneTransformer(backbone, test_time_shifts=1, device="cpu")
    whitened, _ = whiten_backbone(embedding, X_base, y_base)
    path_w = path.with_name(f"{path.stem}-w.pt")
    save_backbone(whitened, path_w, input_shape=(1, 28, 28), trained_on=trained_on)
    print(f"[final] whitened in {time.perf_counter() - start:.0f} s, saved {path_w}")
    print(
        f"evaluate with: skfewshot runs --runs PATH --backbone {path_w} "
        f"--test-time-shifts 1 (without the whitening: --backbone {path})"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=REPO.parent / "shared" / "data" / "omniglot",
        help="folder holding images_background_small{1,2}.zip",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=40,
        help="training budget: epochs' worth of images per backbone",
    )
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument(
        "--trans-episodes",
        type=int,
        default=600,
        help="test episodes for the (slower) transductive head",
    )
    parser.add_argument("--val-episodes", type=int, default=100)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads for training"
    )
    parser.add_argument(
        "--n-jobs", type=int, default=2, help="joblib workers for the episodes"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="load saved backbones instead of training them",
    )
    parser.add_argument(
        "--no-docs", dest="docs", action="store_false", help="do not write the plot"
    )
    parser.add_argument(
        "--train-on-both",
        action="store_true",
        help="train --recipe on small1 + small2 and save it",
    )
    parser.add_argument(
        "--recipe",
        choices=(*RECIPES, "final"),
        default="final",
        help="recipe of --train-on-both (default: final, issue 14's ensemble of "
        "omniglot_one_shot.py, chosen on validation)",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only re-render the tables, plot and docs page from the saved JSON",
    )
    args = parser.parse_args(argv)
    if args.report:
        payload = json.loads((ARTIFACTS / "omniglot_meta_vs_finetune.json").read_text())
        return report(payload, docs=args.docs)
    torch.set_num_threads(args.threads)
    if args.train_on_both:
        return run_train_on_both(args)
    return run_comparison(args)


if __name__ == "__main__":
    main()

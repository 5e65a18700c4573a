"""Inductive vs transductive FineTunedCosineClassifier: accuracy and collapses.

Three heads on the same episodes (same ``--seed``):

* ``inductive``: ``FineTunedCosineClassifier()``;
* ``conditional``: ``transductive=True, marginal_weight=0``, the objective of
  earlier releases (conditional entropy of the queries only);
* ``mutual information``: ``transductive=True`` with the default
  ``marginal_weight=1`` (TIM's mutual information).

Both transductive heads use ``--entropy-weight`` (0.1 by default). An episode
*collapses* when a head's accuracy is at most ``1/n_way + 0.05`` while the
inductive head is above 0.5 on it. Feature sets:

* synthetic: 640-d non-negative class blobs (like ``bench_heads.py``, with
  more noise, so that the inductive head is near 0.65 at 5 shots), 5-way 5-shot
  and 1-shot, 75 queries, one seeded episode each;
* Omniglot: a Conv4 pretrained briefly (``--epochs``) with
  ``SupervisedPretrainer`` on ``images_background_small1``, evaluated on the
  alphabets of ``images_background_small2`` that small1 lacks;
* Banking77: ``LSAEncoder(n_components=256)`` features of the train texts.

Prints a reStructuredText table (mean ± 95% CI, collapsed episodes) with the
machine, versions and command. Run from the repository root (about 5 minutes
on a 2-core CPU with the defaults)::

    python benchmarks/bench_transductive.py --data-dir /work/shared/data

(``docs/benchmarks_transductive.rst`` shows its output.)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_heads import cpu_name  # noqa: E402

from skfewshot.backbone import BackboneTransformer  # noqa: E402
from skfewshot.datasets import (  # noqa: E402
    load_banking77,
    load_omniglot,
    omniglot_shared_alphabets,
)
from skfewshot.finetune import FineTunedCosineClassifier  # noqa: E402
from skfewshot.model_selection import EpisodicSplit  # noqa: E402
from skfewshot.models import Conv4  # noqa: E402
from skfewshot.text import LSAEncoder  # noqa: E402
from skfewshot.training import SupervisedPretrainer  # noqa: E402

HEADS = ("inductive", "conditional", "mutual information")
N_QUERY = 15


def make_heads(entropy_weight):
    """The three heads compared, by name."""
    transductive = {"transductive": True, "entropy_weight": entropy_weight}
    return {
        "inductive": FineTunedCosineClassifier(),
        "conditional": FineTunedCosineClassifier(**transductive, marginal_weight=0),
        "mutual information": FineTunedCosineClassifier(**transductive),
    }


def synthetic_episodes(n_shot, n_episodes, seed, n_way=5, dim=640, noise=5.0):
    """Seeded episodes of non-negative class blobs (post-ReLU-like features)."""
    for episode in range(n_episodes):
        rng = np.random.RandomState(seed + episode)
        centers = rng.normal(size=(n_way, dim))

        def draw(k, centers=centers, rng=rng):
            X = np.concatenate(
                [c + rng.normal(scale=noise, size=(k, dim)) for c in centers]
            )
            return np.maximum(X, 0).astype(np.float32), np.repeat(np.arange(n_way), k)

        yield (*draw(n_shot), *draw(N_QUERY))


def pool_episodes(X, y, n_shot, n_episodes, seed, n_way=5):
    """Episodes of ``EpisodicSplit`` over a feature pool."""
    split = EpisodicSplit(
        n_way, n_shot=n_shot, n_query=N_QUERY, n_episodes=n_episodes, random_state=seed
    )
    for support, query in split.split(X, y):
        yield X[support], y[support], X[query], y[query]


def omniglot_features(data_dir, epochs, seed):
    """Conv4 features of the small2 alphabets that small1 lacks."""
    path = Path(data_dir) / "omniglot"
    small1 = path / "images_background_small1.zip"
    small2 = path / "images_background_small2.zip"
    X_base, y_base = load_omniglot(
        "images_background_small1", path=small1, return_X_y=True
    )
    shared = omniglot_shared_alphabets(
        "images_background_small2",
        "images_background_small1",
        path=small2,
        other_path=small1,
    )
    X_novel, y_novel = load_omniglot(
        "images_background_small2",
        path=small2,
        exclude_alphabets=shared,
        return_X_y=True,
    )
    trainer = SupervisedPretrainer(
        Conv4(), max_epochs=epochs, batch_size=64, device="cpu", random_state=seed
    )
    backbone = trainer.fit(X_base, y_base).backbone_
    features = BackboneTransformer(backbone, device="cpu", cache=False)
    return features.fit(X_novel[:1]).transform(X_novel), y_novel, shared


def banking77_features(data_dir):
    """LSA features of the Banking77 train texts."""
    texts, y = load_banking77(Path(data_dir) / "banking77", return_X_y=True)
    return LSAEncoder(n_components=256).fit_transform(texts), y


def evaluate(episodes, heads, n_way=5):
    """Per-head accuracies, collapse counts and median milliseconds per episode."""
    accuracies = {name: [] for name in heads}
    times = {name: [] for name in heads}
    for X_s, y_s, X_q, y_q in episodes:
        for name, head in heads.items():
            start = time.perf_counter()
            predicted = head.fit(X_s, y_s).predict(X_q)
            times[name].append(time.perf_counter() - start)
            accuracies[name].append(np.mean(predicted == y_q))
    inductive = np.asarray(accuracies["inductive"])
    rows = {}
    for name in heads:
        acc = np.asarray(accuracies[name])
        collapsed = (acc <= 1 / n_way + 0.05) & (inductive > 0.5)
        rows[name] = {
            "mean": acc.mean(),
            "ci95": 1.96 * acc.std() / np.sqrt(len(acc)),
            "collapsed": int(collapsed.sum()),
            "n": len(acc),
            "ms": 1e3 * float(np.median(times[name])),
        }
    return rows


def rst_table(results):
    """The results as a reStructuredText grid table."""
    header = (
        ["feature set", "episodes"]
        + [f"{h} (collapsed)" for h in HEADS]
        + ["ms / episode (ind. / cond. / MI)"]
    )
    body = []
    for case, rows in results.items():
        cells = [case, str(rows["inductive"]["n"])]
        for h in HEADS:
            r = rows[h]
            cells.append(
                f"{100 * r['mean']:.1f} ± {100 * r['ci95']:.1f} ({r['collapsed']})"
            )
        cells.append(" / ".join(f"{rows[h]['ms']:.0f}" for h in HEADS))
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(ch):
        return "+" + "+".join(ch * (w + 2) for w in widths) + "+"

    def fmt(r):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    out = [line("-"), fmt(header), line("=")]
    for r in body:
        out += [fmt(r), line("-")]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--entropy-weight", type=float, default=0.1)
    parser.add_argument("--synthetic-episodes", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConvergenceWarning)
    heads = make_heads(args.entropy_weight)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), one thread")
    print(
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}; command: python {' '.join(sys.argv)}"
    )
    results = {}
    start = time.perf_counter()
    for shot in (5, 1):
        episodes = synthetic_episodes(shot, args.synthetic_episodes, args.seed)
        results[f"synthetic 640-d 5-way {shot}-shot"] = evaluate(episodes, heads)
        print(f"synthetic {shot}-shot done at {time.perf_counter() - start:.0f} s")
    X, y, shared = omniglot_features(args.data_dir, args.epochs, args.seed)
    print(
        f"Omniglot: Conv4 trained in {args.epochs} epochs on small1; {len(X)} images "
        f"of {len(np.unique(y))} small2 characters (without {', '.join(shared)}) "
        f"at {time.perf_counter() - start:.0f} s"
    )
    for shot in (5, 1):
        episodes = pool_episodes(X, y, shot, args.episodes, args.seed)
        results[f"Omniglot Conv4 5-way {shot}-shot"] = evaluate(episodes, heads)
    X, y = banking77_features(args.data_dir)
    for shot in (5, 1):
        episodes = pool_episodes(X, y, shot, args.episodes, args.seed)
        results[f"Banking77 LSA-256 5-way {shot}-shot"] = evaluate(episodes, heads)
    print(f"total {time.perf_counter() - start:.0f} s")
    print(rst_table(results))


if __name__ == "__main__":
    main()

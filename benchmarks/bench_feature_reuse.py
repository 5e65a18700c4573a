"""Episodic evaluation on Omniglot small2: raw-pixel baselines and feature reuse.

1. ``PrototypeClassifier`` on raw pixels (28x28, strokes = 1) of
   ``images_background_small2``: 5-way 1-shot and 20-way 1-shot, 600 episodes.
2. The wall time of a 600-episode 5-way 1-shot evaluation of
   ``make_pipeline(BackboneTransformer(Conv4()), PrototypeClassifier())``
   (a), with feature reuse: ``evaluate_episodes`` runs the frozen backbone once
   over the pool; (b), without: the same episodes through the same pipeline with
   ``cache=False``, fitted and applied per episode (the backbone runs on every
   support and query image of every episode).

Usage::

    python benchmarks/bench_feature_reuse.py [--data-dir ../shared/data/omniglot]
"""

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from skfewshot import (
    BackboneTransformer,
    EpisodicSplit,
    PrototypeClassifier,
    evaluate_episodes,
)
from skfewshot.datasets import load_omniglot
from skfewshot.models import Conv4

ROOT = Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=str(ROOT.parent / "shared" / "data" / "omniglot")
    )
    parser.add_argument("--episodes", type=int, default=600)
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}, scikit-learn {sklearn.__version__}"
    )
    data = load_omniglot("images_background_small2", path=args.data_dir)
    X, y = data.data, data.target
    pixels = X.reshape(len(X), -1)
    print(f"# small2: {len(X)} images, {len(np.unique(y))} classes; seed 0")

    for n_way in (5, 20):
        start = time.perf_counter()
        scores = evaluate_episodes(
            PrototypeClassifier(),
            pixels,
            y,
            n_way=n_way,
            n_shot=1,
            n_episodes=args.episodes,
            random_state=0,
        )
        print(
            f"raw pixels, PrototypeClassifier: {scores} "
            f"[{time.perf_counter() - start:.1f} s]"
        )

    torch.manual_seed(0)
    net = Conv4(in_channels=1)
    settings = dict(n_way=5, n_shot=1, n_query=15, n_episodes=args.episodes)
    pipe = make_pipeline(BackboneTransformer(net), PrototypeClassifier())
    BackboneTransformer.clear_cache()
    start = time.perf_counter()
    reused = evaluate_episodes(pipe, X, y, random_state=0, **settings)
    t_reuse = time.perf_counter() - start
    print(
        f"Conv4 (random init) + prototypes, feature reuse: {reused} [{t_reuse:.1f} s]"
    )

    no_cache = make_pipeline(
        BackboneTransformer(net, cache=False), PrototypeClassifier()
    )
    accuracies = []
    start = time.perf_counter()
    for support, query in EpisodicSplit(random_state=0, **settings).split(X, y):
        model = clone(no_cache).fit(X[support], y[support])
        accuracies.append(np.mean(model.predict(X[query]) == y[query]))
    t_plain = time.perf_counter() - start
    print(
        f"Conv4 (random init) + prototypes, backbone per episode: "
        f"{100 * np.mean(accuracies):.1f} % [{t_plain:.1f} s]"
    )
    assert np.allclose(accuracies, reused.accuracies, atol=1e-6), "not the same"
    print(
        f"speed-up from feature reuse: {t_plain / t_reuse:.1f}x "
        "(identical per-episode accuracies)"
    )


if __name__ == "__main__":
    main()

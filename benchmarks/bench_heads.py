"""Time the few-shot heads on one 5-way 5-shot episode of 640-d features.

Prints the median wall time of ``fit`` + ``predict`` and of ``fit`` +
``predict_proba`` for :class:`~skfewshot.PrototypeClassifier` and
:class:`~skfewshot.FineTunedCosineClassifier` (inductive and transductive),
over ``--repeats`` runs after a warm-up, with the machine and library versions.
640 is the feature size of a ResNet-12 backbone; the features are random
non-negative class blobs (like post-ReLU features), so the figures measure the
heads, not a backbone. Run it on an otherwise idle machine:

    python benchmarks/bench_heads.py --repeats 50
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import sklearn
import torch

from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.prototype import PrototypeClassifier


def make_episode(n_way=5, n_shot=5, n_query=75, dim=640, seed=0):
    """Support and query features of one episode: class blobs, clipped at 0."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_way, dim))

    def draw(n_per_class):
        X = np.concatenate(
            [c + rng.normal(scale=3.0, size=(n_per_class, dim)) for c in centers]
        )
        return np.maximum(X, 0).astype(np.float32), np.repeat(
            np.arange(n_way), n_per_class
        )

    X_support, y_support = draw(n_shot)
    X_query, y_query = draw(n_query // n_way)
    return X_support, y_support, X_query, y_query


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(estimator, method, episode, repeats, warmup):
    """Median milliseconds of ``fit(support)`` then ``method(queries)``."""
    X_support, y_support, X_query, _ = episode
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        estimator.fit(X_support, y_support)
        getattr(estimator, method)(X_query)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores)")
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, torch {torch.__version__}"
    )
    print(f"device for FineTunedCosineClassifier: {args.device}")
    episode = make_episode(dim=args.dim)
    print(
        f"episode: 5-way 5-shot, {episode[2].shape[0]} queries, {args.dim}-d; "
        f"median of {args.repeats} runs after {args.warmup} warm-up runs\n"
    )
    heads = {
        "PrototypeClassifier()": PrototypeClassifier(),
        "FineTunedCosineClassifier()": FineTunedCosineClassifier(device=args.device),
        "FineTunedCosineClassifier(transductive=True, entropy_weight=0.1)": (
            FineTunedCosineClassifier(
                transductive=True, entropy_weight=0.1, device=args.device
            )
        ),
    }
    print(f"{'head':<66} {'fit+predict':>12} {'fit+proba':>10}  acc  n_iter")
    for name, head in heads.items():
        t_predict = median_ms(head, "predict", episode, args.repeats, args.warmup)
        t_proba = median_ms(head, "predict_proba", episode, args.repeats, args.warmup)
        accuracy = np.mean(head.predict(episode[2]) == episode[3])
        n_iter = getattr(head, "n_iter_", "-")
        print(
            f"{name:<66} {t_predict:>9.2f} ms {t_proba:>7.2f} ms "
            f"{accuracy:.2f}  {n_iter}"
        )


if __name__ == "__main__":
    main()

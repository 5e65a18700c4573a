"""Time the few-shot heads per episode: fit + predict, median and p90, one thread.

For each feature set (640-d 5-way 5-shot with 75 queries, 64-d 20-way 1-shot
with 300 queries) it prints, per head, the median and the 90th percentile of
the wall time of ``fit(support)`` + ``predict(queries)``, the median of
``fit`` + ``predict_proba``, the accuracy on that episode and the L-BFGS
iterations, after a warm-up. The heads are :class:`~skfewshot.PrototypeClassifier`
(inductive and, where this version has it, ``transductive=True``),
:class:`~skfewshot.FineTunedCosineClassifier` (inductive and transductive), and
a bare numpy implementation of the prototype arithmetic (class means, L2
normalisation, cosine argmax: no validation at all), timed in the same process
as the floor that per-call overhead is measured against.

The features are random non-negative class blobs (like post-ReLU features), so
the figures measure the heads, not a backbone. Everything runs on one thread
(BLAS and torch) unless ``--threads`` says otherwise. Run it on an otherwise
idle machine::

    python benchmarks/bench_heads.py
    python benchmarks/bench_heads.py --repeats 200 --skip-finetune

To compare with another version of skfewshot (a "before" figure), run the same
script with that version first on the path, e.g. from a ``git worktree`` of
the older commit: ``PYTHONPATH=/path/to/old/checkout python
benchmarks/bench_heads.py``; heads that the older version lacks are skipped.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import sklearn
import torch
from threadpoolctl import threadpool_limits

import skfewshot
from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.prototype import PrototypeClassifier

# (label, n_way, n_shot, queries in all, dim)
FEATURE_SETS = [
    ("640-d 5-way 5-shot", 5, 5, 75, 640),
    ("64-d 20-way 1-shot", 20, 1, 300, 64),
]


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


class NumpyPrototypes:
    """The prototype arithmetic alone, in numpy: the floor of a prototype head.

    Class means, L2-normalised prototypes and queries, cosine argmax; no input
    validation, no label encoding beyond ``0..n_way-1`` labels.
    """

    def fit(self, X, y):
        n_way = int(y.max()) + 1
        prototypes = np.zeros((n_way, X.shape[1]), dtype=X.dtype)
        np.add.at(prototypes, y, X)
        prototypes /= np.bincount(y, minlength=n_way)[:, None]
        self.prototypes_ = prototypes / np.linalg.norm(prototypes, axis=1)[:, None]
        return self

    def _cosines(self, X):
        return (X / np.linalg.norm(X, axis=1)[:, None]) @ self.prototypes_.T

    def predict_proba(self, X):
        logits = 10.0 * self._cosines(X)
        logits -= logits.max(axis=1, keepdims=True)
        proba = np.exp(logits)
        return proba / proba.sum(axis=1, keepdims=True)

    def predict(self, X):
        return np.argmax(self._cosines(X), axis=1)


def per_call_ms(estimator, method, episode, repeats, warmup, budget_s):
    """Milliseconds of ``fit(support)`` then ``method(queries)``, per call.

    Runs ``warmup`` untimed calls, then ``repeats`` timed ones, or fewer when
    they take more than ``budget_s`` seconds (at least 20).
    """
    X_support, y_support, X_query, _ = episode
    call = getattr(estimator, method)
    for _ in range(warmup):
        estimator.fit(X_support, y_support)
        call(X_query)
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < repeats and (len(times) < 20 or time.perf_counter() < deadline):
        start = time.perf_counter()
        estimator.fit(X_support, y_support)
        call(X_query)
        times.append(time.perf_counter() - start)
    return 1e3 * np.asarray(times)


def make_heads(device, skip_finetune) -> list[tuple[str, Callable[[], object]]]:
    """``(name, factory)`` of every head this version of skfewshot has."""
    heads = [
        ("numpy prototypes (no validation)", NumpyPrototypes),
        ("PrototypeClassifier()", PrototypeClassifier),
    ]
    if "transductive" in inspect.signature(PrototypeClassifier).parameters:
        heads.append(
            (
                "PrototypeClassifier(transductive=True)",
                lambda: PrototypeClassifier(transductive=True),
            )
        )
    else:
        print("skipped: PrototypeClassifier(transductive=True) (not in this version)")
    if not skip_finetune:
        heads += [
            (
                "FineTunedCosineClassifier()",
                lambda: FineTunedCosineClassifier(device=device),
            ),
            (
                "FineTunedCosineClassifier(transductive=True, entropy_weight=0.1)",
                lambda: FineTunedCosineClassifier(
                    transductive=True, entropy_weight=0.1, device=device
                ),
            ),
        ]
    return heads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds per head and method"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores)")
    print(f"threads: {args.threads} (BLAS and torch)")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, torch {torch.__version__}, "
        f"skfewshot from {os.path.dirname(skfewshot.__file__)}"
    )
    print(f"device for FineTunedCosineClassifier: {args.device}")
    print(
        f"up to {args.repeats} timed runs (at most {args.budget:g} s) per head "
        f"and method, after {args.warmup} warm-up runs\n"
    )
    heads = make_heads(args.device, args.skip_finetune)
    with threadpool_limits(args.threads):
        for label, n_way, n_shot, n_query, dim in FEATURE_SETS:
            episode = make_episode(n_way, n_shot, n_query, dim)
            print(f"{label}, {n_query} queries")
            print(
                f"  {'head':<66} {'fit+predict median':>18} {'p90':>8} "
                f"{'fit+proba':>10} {'runs':>5}  acc  n_iter"
            )
            for name, factory in heads:
                head = factory()
                args_ = (episode, args.repeats, args.warmup, args.budget)
                t_predict = per_call_ms(head, "predict", *args_)
                t_proba = per_call_ms(head, "predict_proba", *args_)
                accuracy = np.mean(head.predict(episode[2]) == episode[3])
                n_iter = getattr(head, "n_iter_", "-")
                print(
                    f"  {name:<66} {np.median(t_predict):>15.3f} ms "
                    f"{np.percentile(t_predict, 90):>5.3f} ms "
                    f"{np.median(t_proba):>7.3f} ms {t_predict.size:>5}  "
                    f"{accuracy:.2f}  {n_iter}"
                )
            print()


if __name__ == "__main__":
    main()

"""Batched vs per-episode evaluation of the library's heads (issue 10, item 3).

600 5-way 5-shot 15-query episodes of 640-d float32 features (64 synthetic
classes of 100 rows), evaluated by ``evaluate_episodes`` twice on the same
episodes (``random_state=0``): batched (the library's head, 64 episodes per
torch computation, on the device the head computes on) and per episode (a
subclass that overrides ``fit``, which voids the batched capability, so one
fitted clone per episode). Prints seconds (median of ``--repeats`` runs),
episodes/s, the mean accuracy, and how many episodes and queries the two
paths score differently (the prototype head: none; the fine-tuned head:
only queries within the solver's ``tol`` of a tie).

Usage::

    python benchmarks/bench_batched.py [--episodes 600] [--repeats 3]
"""

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from skfewshot import FineTunedCosineClassifier, PrototypeClassifier
from skfewshot.model_selection import evaluate_episodes

N_QUERY = 15


class PerEpisodePrototype(PrototypeClassifier):
    """Overriding ``fit`` voids the batched capability: one clone per episode."""

    def fit(self, X, y, sample_weight=None):
        return super().fit(X, y, sample_weight)


class PerEpisodeFineTuned(FineTunedCosineClassifier):
    """Overriding ``fit`` voids the batched capability: one clone per episode."""

    def fit(self, X, y, sample_weight=None):
        return super().fit(X, y, sample_weight)


def features(n_classes=64, per_class=100, dim=640, seed=0):
    """Overlapping Gaussian classes: accuracies well below 100%."""
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    centers = rng.normal(scale=0.15, size=(n_classes, dim))
    X = centers[y] + rng.normal(size=(len(y), dim))
    return X.astype(np.float32), y


def timed(head, X, y, n_episodes, repeats):
    """Median seconds of ``repeats`` evaluations, and the last scores."""
    kwargs = dict(n_way=5, n_shot=5, n_query=N_QUERY, n_episodes=n_episodes)
    evaluate_episodes(head, X, y, random_state=0, **(kwargs | {"n_episodes": 5}))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = evaluate_episodes(head, X, y, random_state=0, **kwargs)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y = features()
    device = (
        "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    )
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), batched on {device}; "
        f"{args.episodes} 5-way 5-shot {N_QUERY}-query episodes of "
        f"{X.shape[1]}-d float32"
    )
    print(
        f"{'head':<44} {'per-episode s':>13} {'batched s':>10} {'eps/s':>7} "
        f"{'speed-up':>8} {'accuracy':>8}  differing episodes / queries"
    )
    heads = [
        (f"PrototypeClassifier(metric={m!r})", PerEpisodePrototype, {"metric": m})
        for m in ["cosine", "euclidean", "dot"]
    ] + [
        ("FineTunedCosineClassifier()", PerEpisodeFineTuned, {}),
        (
            "FineTunedCosine(transductive, ew=0.1)",
            PerEpisodeFineTuned,
            {"transductive": True, "entropy_weight": 0.1},
        ),
    ]
    for name, per_episode, params in heads:
        batched = per_episode.__mro__[1]
        with warnings.catch_warnings():  # both paths warn alike on max_iter
            warnings.simplefilter("ignore")
            t_plain, plain = timed(
                per_episode(**params), X, y, args.episodes, args.repeats
            )
            t_batch, batch = timed(batched(**params), X, y, args.episodes, args.repeats)
        differ = plain.accuracies != batch.accuracies
        queries = np.abs(plain.accuracies - batch.accuracies).sum() * 5 * N_QUERY
        print(
            f"{name:<44} {t_plain:>13.3f} {t_batch:>10.3f} "
            f"{args.episodes / t_batch:>7.0f} {t_plain / t_batch:>7.1f}x "
            f"{100 * batch.mean:>7.2f}%  {differ.sum()} / {queries:.0f} "
            f"of {args.episodes * 5 * N_QUERY}"
        )


if __name__ == "__main__":
    main()

"""Batched vs per-episode evaluation of the prototype head (issue 10, item 3).

600 5-way 5-shot 15-query episodes of 640-d float32 features (64 synthetic
classes of 100 rows), evaluated by ``evaluate_episodes`` twice on the same
episodes (``random_state=0``): per episode (``PrototypeClassifier``, one
fitted clone per episode) and batched (the same head declaring
``_fewshot_batch_predictor``, 64 episodes per torch computation, on
``device="auto"``). Prints seconds (median of ``--repeats`` runs),
episodes/s and whether the per-episode accuracies are identical, for each
metric.

Usage::

    python benchmarks/bench_batched.py [--episodes 600] [--repeats 5]
"""

import argparse
import platform
import time

import numpy as np
import torch

from skfewshot._batched import prototype_batch_predictor
from skfewshot.model_selection import evaluate_episodes
from skfewshot.prototype import PrototypeClassifier


class BatchedPrototype(PrototypeClassifier):
    """PrototypeClassifier declaring the batched capability, as the library's
    class does once ``_fewshot_batch_predictor`` is assigned in its body."""

    _fewshot_batch_predictor = prototype_batch_predictor


def features(n_classes=64, per_class=100, dim=640, seed=0):
    """Overlapping Gaussian classes: accuracies well below 100%."""
    rng = np.random.RandomState(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    centers = rng.normal(scale=0.15, size=(n_classes, dim))
    X = centers[y] + rng.normal(size=(len(y), dim))
    return X.astype(np.float32), y


def timed(head, X, y, n_episodes, repeats):
    """Median seconds of ``repeats`` evaluations, and the last scores."""
    kwargs = dict(n_way=5, n_shot=5, n_query=15, n_episodes=n_episodes)
    evaluate_episodes(head, X, y, random_state=0, **kwargs)  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = evaluate_episodes(head, X, y, random_state=0, **kwargs)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), scores


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    X, y = features()
    device = (
        "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    )
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), batched on {device}; "
        f"{args.episodes} 5-way 5-shot 15-query episodes of {X.shape[1]}-d float32"
    )
    print(
        f"{'metric':<10} {'per-episode s':>13} {'eps/s':>8} "
        f"{'batched s':>10} {'eps/s':>9} {'speed-up':>8}  accuracy   identical"
    )
    for metric in ["cosine", "euclidean", "dot"]:
        t_plain, plain = timed(
            PrototypeClassifier(metric=metric), X, y, args.episodes, args.repeats
        )
        t_batch, batch = timed(
            BatchedPrototype(metric=metric), X, y, args.episodes, args.repeats
        )
        same = np.array_equal(plain.accuracies, batch.accuracies)
        print(
            f"{metric:<10} {t_plain:>13.3f} {args.episodes / t_plain:>8.0f} "
            f"{t_batch:>10.3f} {args.episodes / t_batch:>9.0f} "
            f"{t_plain / t_batch:>7.1f}x  {100 * batch.mean:5.1f}%     {same}"
        )


if __name__ == "__main__":
    main()

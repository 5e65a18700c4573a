"""Few-shot heads of skfewshot against easyfsl and scikit-learn, side by side.

Regenerates the speed/accuracy table of issue 10 in one run: for each feature
set, every head classifies the same episodes of the same float32 features,
interleaved (episode by episode, every head in turn, the order rotated by one
head each episode), on one thread. Per head it prints the accuracy with its
95% confidence interval, the median and the 90th percentile of the wall time
of fit + predict of one episode, and the ratio of that median to the fastest
*peer* (easyfsl or scikit-learn head) of the same family. A second section
times :func:`skfewshot.model_selection.evaluate_episodes` on 600 episodes
against a plain per-episode loop over the same episodes (a batched path for
the library's own heads shows as a ratio well above 1).

**Features.** Synthetic, seeded class clusters, like ``bench_heads.py`` but
with a noise scale chosen per feature set so that the prototype head lands
near 70% (``bench_heads.make_episode`` has a fixed noise of 3.0: 98% at 640-d
5-way, 13% at 64-d 20-way 1-shot, too easy and too hard to rank heads).
Episode ``e`` of a feature set uses ``numpy.random.RandomState(seed + e)``:
``n_way`` centres from N(0, I_d), then each support and query row is its
class centre plus N(0, noise^2 I_d) noise, clipped at 0 (like post-ReLU
features) and cast to float32; labels are 0..n_way-1; 15 queries per class.
With ``noise=3.0`` this module's ``make_episode`` returns exactly the arrays
of ``bench_heads.make_episode`` for the same seed.

**Heads.** Families: *prototype* (nearest class mean), *fine-tuned*
(inductive, a classifier trained on the support set) and *transductive*
(also uses the episode's queries). easyfsl methods run on the features with
their default ``nn.Identity`` backbone, exactly as easyfsl's own
``evaluate_on_one_task`` does (``model.eval()``, ``torch.no_grad()``,
``process_support_set`` then ``forward`` and ``argmax``), with their documented
default hyper-parameters. A peer that is not installed is skipped, and the
output says so.

Install the peers in a separate virtual environment (easyfsl and torchvision
are benchmark dependencies only, never dependencies of skfewshot)::

    python3 -m venv /tmp/peers
    /tmp/peers/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/peers/bin/pip install -r benchmarks/requirements-peers.txt
    /tmp/peers/bin/pip install --no-deps -e .

Run it on an otherwise idle machine, from the repository root::

    /tmp/peers/bin/python benchmarks/bench_heads_vs_peers.py --quick
    /tmp/peers/bin/python benchmarks/bench_heads_vs_peers.py --episodes 100
    /tmp/peers/bin/python benchmarks/bench_heads_vs_peers.py --format rst
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sklearn
import torch
from bench_heads import cpu_name
from sklearn.base import clone
from threadpoolctl import threadpool_info, threadpool_limits

import skfewshot
from skfewshot.finetune import FineTunedCosineClassifier
from skfewshot.model_selection import EpisodeScores, EpisodicSplit, evaluate_episodes
from skfewshot.prototype import PrototypeClassifier

# (label, dim, n_way, n_shot, noise): noise puts the prototype head near 70%
FEATURE_SETS = [
    ("640-d 5-way 5-shot", 640, 5, 5, 4.5),
    ("64-d 20-way 1-shot", 64, 20, 1, 1.2),
    ("64-d 5-way 5-shot", 64, 5, 5, 2.4),
]
N_QUERY = 15  # query rows per class
FAMILIES = ("prototype", "fine-tuned", "transductive")
ENTROPY_WEIGHT = 0.1  # of the transductive FineTunedCosineClassifier, as in issue 10


def make_episode(n_way, n_shot, n_query, dim, noise, seed):
    """One episode of seeded class clusters, float32, clipped at 0.

    Returns ``X_support, y_support, X_query, y_query``, with ``n_shot`` support
    and ``n_query`` query rows per class and labels ``0..n_way-1``.
    """
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_way, dim))

    def draw(n_per_class):
        X = np.repeat(centers, n_per_class, axis=0)
        X += rng.normal(scale=noise, size=X.shape)
        return np.maximum(X, 0).astype(np.float32), np.repeat(
            np.arange(n_way), n_per_class
        )

    return (*draw(n_shot), *draw(n_query))


@dataclass
class Head:
    """A named ``run(X_support, y_support, X_query) -> labels`` of one family."""

    name: str
    family: str
    library: str  # "skfewshot", "easyfsl" or "scikit-learn"
    run: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _estimator_run(estimator):
    """``fit`` then ``predict`` of a scikit-learn estimator (refitted each call)."""

    def run(X_support, y_support, X_query):
        return estimator.fit(X_support, y_support).predict(X_query)

    return run


def _easyfsl_run(model):
    """An easyfsl method on features, as easyfsl's ``evaluate_on_one_task``.

    ``process_support_set`` recomputes the prototypes each episode, so the
    prototypes fine-tuned (or rectified) by the previous ``forward`` are gone.
    """
    model.eval()

    def run(X_support, y_support, X_query):
        with torch.no_grad():
            model.process_support_set(
                torch.from_numpy(X_support), torch.from_numpy(y_support)
            )
            return model(torch.from_numpy(X_query)).argmax(1).numpy()

    return run


def _bd_cspn_option():
    """``{name: value}`` that turns on BD-CSPN in PrototypeClassifier, or None.

    Looks for a parameter whose name mentions rectification, BD-CSPN or
    transduction, and the first value among True and the usual spellings of
    the method that ``fit`` + ``predict`` accept on a tiny episode.
    """
    episode = make_episode(2, 2, 2, 4, 1.0, 0)
    for name in PrototypeClassifier().get_params():
        if not any(key in name.lower() for key in ("rectif", "cspn", "transduct")):
            continue
        for value in (True, "bd-cspn", "bdcspn", "bd_cspn", "BD-CSPN"):
            try:
                _estimator_run(PrototypeClassifier(**{name: value}))(*episode[:3])
            except (TypeError, ValueError):
                continue
            return {name: value}
    return None


def make_heads(log):
    """Every head that can run here; ``log`` gets a line per skipped one."""
    heads = [
        Head(
            "PrototypeClassifier",
            "prototype",
            "skfewshot",
            _estimator_run(PrototypeClassifier()),
        ),
        Head(
            "FineTunedCosineClassifier",
            "fine-tuned",
            "skfewshot",
            _estimator_run(FineTunedCosineClassifier(device="cpu")),
        ),
        Head(
            f"FineTunedCosine transductive (entropy_weight={ENTROPY_WEIGHT})",
            "transductive",
            "skfewshot",
            _estimator_run(
                FineTunedCosineClassifier(
                    transductive=True, entropy_weight=ENTROPY_WEIGHT, device="cpu"
                )
            ),
        ),
    ]
    option = _bd_cspn_option()
    if option is None:
        log("skipped: PrototypeClassifier + BD-CSPN (no such option in this version)")
    else:
        ((name, value),) = option.items()
        heads.append(
            Head(
                f"PrototypeClassifier({name}={value!r})",
                "transductive",
                "skfewshot",
                _estimator_run(PrototypeClassifier(**option)),
            )
        )
    try:
        from easyfsl.methods import (
            BDCSPN,
            TIM,
            Finetune,
            SimpleShot,
            TransductiveFinetuning,
        )
    except ImportError as exc:
        log(f"skipped: easyfsl heads (easyfsl is not installed: {exc})")
    else:
        for name, family, method in [
            ("SimpleShot", "prototype", SimpleShot),
            ("Finetune", "fine-tuned", Finetune),
            ("TIM", "transductive", TIM),
            ("BD-CSPN", "transductive", BDCSPN),
            ("TransductiveFinetuning", "transductive", TransductiveFinetuning),
        ]:
            heads.append(Head(name, family, "easyfsl", _easyfsl_run(method())))
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import NearestCentroid

    heads += [
        Head(
            "NearestCentroid",
            "prototype",
            "scikit-learn",
            _estimator_run(NearestCentroid()),
        ),
        Head(
            "LogisticRegression(max_iter=1000)",
            "fine-tuned",
            "scikit-learn",
            _estimator_run(LogisticRegression(max_iter=1000)),
        ),
    ]
    return heads


def run_feature_set(heads, dim, n_way, n_shot, noise, n_episodes, warmup, seed):
    """Accuracies and seconds, each of shape (n_heads, n_episodes).

    Each episode runs every head in turn, starting one head later than the
    episode before, so drift of the machine spreads over all heads.
    """
    accuracies = np.empty((len(heads), n_episodes))
    seconds = np.empty((len(heads), n_episodes))
    for e in range(-warmup, n_episodes):
        # warm-up episodes use other seeds and are not recorded
        X_s, y_s, X_q, y_q = make_episode(
            n_way, n_shot, N_QUERY, dim, noise, seed + e + (10**6 if e < 0 else 0)
        )
        for k in range(len(heads)):
            h = (k + e) % len(heads)
            start = time.perf_counter()
            predicted = heads[h].run(X_s, y_s, X_q)
            elapsed = time.perf_counter() - start
            if e >= 0:
                seconds[h, e] = elapsed
                accuracies[h, e] = np.mean(np.asarray(predicted) == y_q)
    return accuracies, seconds


def summarise(heads, accuracies, seconds, n_way, n_shot):
    """One row per head: scores, median and p90 ms, ratio to the fastest peer."""
    median = 1e3 * np.median(seconds, axis=1)
    p90 = 1e3 * np.percentile(seconds, 90, axis=1)
    rows = []
    for h, head in enumerate(heads):
        peers = [
            median[i]
            for i, other in enumerate(heads)
            if other.family == head.family and other.library != "skfewshot"
        ]
        rows.append(
            {
                "head": f"{head.library} {head.name}",
                "family": head.family,
                "scores": EpisodeScores(
                    accuracies[h], n_way=n_way, n_shot=n_shot, n_query=N_QUERY
                ),
                "median": median[h],
                "p90": p90[h],
                "ratio": median[h] / min(peers) if peers else float("nan"),
            }
        )
    rows.sort(key=lambda row: (FAMILIES.index(row["family"]), row["median"]))
    return rows


def _cells(row):
    scores = row["scores"]
    return [
        row["family"],
        row["head"],
        f"{100 * scores.mean:.1f} ± {100 * scores.ci95:.1f}",
        f"{row['median']:.2f}",
        f"{row['p90']:.2f}",
        f"{row['ratio']:.2f}x",
    ]


HEADER = ["family", "head", "accuracy %", "median ms", "p90 ms", "/ fastest peer"]


def print_table(title, rows, fmt):
    """The rows as aligned text or as an RST list-table."""
    if fmt == "rst":
        print(f"**{title}**\n\n.. list-table::\n   :header-rows: 1\n")
        for cells in [HEADER] + [_cells(row) for row in rows]:
            print(
                "\n".join(
                    f"   {'*' if i == 0 else ' '} - {c}" for i, c in enumerate(cells)
                )
            )
        print()
        return
    widths = [12, 62, 12, 10, 8, 14]
    print(title)
    for cells in [HEADER] + [_cells(row) for row in rows]:
        print(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )
        )
    print()


def _per_episode_loop(estimator, X, y, n_way, n_shot, n_episodes, seed):
    """Accuracies of one clone per episode over ``EpisodicSplit``'s episodes."""
    split = EpisodicSplit(
        n_way, n_shot=n_shot, n_query=N_QUERY, n_episodes=n_episodes, random_state=seed
    )
    return np.array(
        [
            np.mean(clone(estimator).fit(X[s], y[s]).predict(X[q]) == y[q])
            for s, q in split.split(X, y)
        ]
    )


def batched_section(n_episodes, seed, log):
    """Seconds of evaluate_episodes vs a per-episode loop, same episodes."""
    dim, n_way, n_shot, noise = 640, 5, 5, 4.5
    # a pool of 64 classes x 40 rows, the same kind of clusters as above
    X_s, y_s, X_q, y_q = make_episode(64, 20, 20, dim, noise, seed)
    X, y = np.concatenate([X_s, X_q]), np.concatenate([y_s, y_q])
    from sklearn.neighbors import NearestCentroid

    estimators = {
        "PrototypeClassifier": PrototypeClassifier(),
        "FineTunedCosineClassifier": FineTunedCosineClassifier(device="cpu"),
        f"FineTunedCosine transductive (entropy_weight={ENTROPY_WEIGHT})": (
            FineTunedCosineClassifier(
                transductive=True, entropy_weight=ENTROPY_WEIGHT, device="cpu"
            )
        ),
        "NearestCentroid (foreign: per-episode path)": NearestCentroid(),
    }
    print(
        f"evaluate_episodes vs a per-episode loop: {n_episodes} episodes of "
        f"{dim}-d {n_way}-way {n_shot}-shot, {N_QUERY} queries per class, from a "
        f"pool of 64 classes x 40 rows (noise {noise}, seed {seed}); seconds of "
        "one run each after a 5-episode warm-up of both"
    )
    print(
        f"{'head':<62}  {'loop s':>8}  {'evaluate_episodes s':>20}  "
        f"{'speed-up':>8}  {'max |acc diff|':>14}"
    )
    for name, estimator in estimators.items():
        kwargs = dict(n_way=n_way, n_shot=n_shot, n_query=N_QUERY, random_state=seed)
        evaluate_episodes(estimator, X, y, n_episodes=5, **kwargs)
        _per_episode_loop(estimator, X, y, n_way, n_shot, 5, seed)
        start = time.perf_counter()
        loop = _per_episode_loop(estimator, X, y, n_way, n_shot, n_episodes, seed)
        t_loop = time.perf_counter() - start
        start = time.perf_counter()
        scores = evaluate_episodes(estimator, X, y, n_episodes=n_episodes, **kwargs)
        t_eval = time.perf_counter() - start
        diff = np.max(np.abs(scores.accuracies - loop))
        print(
            f"{name:<62}  {t_loop:>8.3f}  {t_eval:>20.3f}  "
            f"{t_loop / t_eval:>7.1f}x  {diff:>14.4f}"
        )
        if t_loop / t_eval > 2:
            log(f"batched path detected for {name}")
    print()


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _git_commit():
    root = os.path.dirname(os.path.dirname(os.path.abspath(skfewshot.__file__)))
    try:
        return subprocess.run(
            ["git", "-C", root, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def print_machine():
    """CPU, threads, BLAS and library versions."""
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), one thread used")
    blas = sorted({f"{p['internal_api']} {p['version']}" for p in threadpool_info()})
    print(f"BLAS: {', '.join(blas)}; torch threads: {torch.get_num_threads()}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"{var}={os.environ[var]}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}, torch {torch.__version__}, "
        f"easyfsl {_version('easyfsl')}"
    )
    print(f"skfewshot from {os.path.dirname(skfewshot.__file__)} at {_git_commit()}")
    print(_load())


def _load():
    """The 1, 5 and 15 minute load averages: other work skews the timings."""
    return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batched-episodes", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="10 episodes, 60 batched episodes"
    )
    parser.add_argument("--format", choices=["text", "rst"], default="text")
    args = parser.parse_args(argv)
    if args.quick:
        args.episodes, args.batched_episodes = 10, 60

    torch.set_num_threads(1)
    # NearestCentroid computes a within-class spread for its (unused)
    # shrinkage, 0 / 0 in a 1-shot episode: harmless, and noisy
    warnings.filterwarnings(
        "ignore",
        message="invalid value encountered in divide",
        category=RuntimeWarning,
        module="sklearn.neighbors._nearest_centroid",
    )
    notes = []
    with threadpool_limits(limits=1):
        print_machine()
        heads = make_heads(notes.append)
        print(
            f"{args.episodes} episodes per feature set (seeds {args.seed}.."
            f"{args.seed + args.episodes - 1}), {N_QUERY} queries per class, "
            f"after {args.warmup} warm-up episodes; heads interleaved per episode\n"
        )
        for note in notes:
            print(note)
        print()
        for label, dim, n_way, n_shot, noise in FEATURE_SETS:
            accuracies, seconds = run_feature_set(
                heads, dim, n_way, n_shot, noise, args.episodes, args.warmup, args.seed
            )
            rows = summarise(heads, accuracies, seconds, n_way, n_shot)
            print_table(f"{label} (noise {noise})", rows, args.format)
        batched_notes = []
        batched_section(args.batched_episodes, args.seed, batched_notes.append)
        for note in batched_notes or ["no batched path detected (speed-up <= 2x)"]:
            print(note)
        print(f"at the end, {_load()}")


if __name__ == "__main__":
    main()

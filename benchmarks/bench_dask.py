"""1 vs 2 Dask workers against joblib's local backends (issue 13, item 5).

Two jobs, each timed (wall and CPU seconds) with the peak resident memory of
every worker process and of the client:

embedding
    ``N`` random 28x28 grayscale images (``--rows``, default 20,000; drawn
    from ``--seed`` block by block *on the workers*, so the client never holds
    the images) embedded by a ``BackboneTransformer`` around a small
    ``Conv4(hidden=32)``, in blocks of ``--block`` rows: the fitted
    transformer is scattered once to every worker and ``client.map`` runs one
    task per block; the features come back to the client. Baseline: the same
    transformer on the same images in the client process (no Dask).
evaluation
    ``--episodes`` (default 2,000) 5-way 5-shot 15-query episodes of 640-d
    float32 features (64 overlapping Gaussian classes of 100 rows, seed 0),
    ``random_state=0``, on the *per-episode path*
    (``PrototypeClassifier(unlabelled_label=-1)``: one fitted clone per
    episode, dispatched by joblib): sequentially (``n_jobs=1``), with loky
    (``n_jobs=2``), and under ``joblib.parallel_config(backend="dask")``
    (``n_jobs=2``) on 1 and 2 workers and on 1 worker of 2 threads; plus the
    batched default path
    (``PrototypeClassifier()``, 64 episodes per torch computation in the
    client). Every per-episode run must give the sequential run's accuracies
    bit for bit (checked). The overhead per episode is
    ``wall * workers / episodes - sequential wall / episodes``: the time a
    worker spends per episode beyond the work itself (dispatch,
    pickling, scattering, result collection).

Each Dask configuration gets a fresh ``LocalCluster(processes=True,
threads_per_worker=1, dashboard_address=None)``, so a worker's peak RSS
(``ru_maxrss``) belongs to that one job. ``OMP_NUM_THREADS=1`` is set for the
client and inherited by the workers (one thread per process: 2 processes on 2
cores). The client's peak RSS is its high-water mark so far in the run (a
process's peak cannot be reset), so it only grows down the table.

Usage::

    python benchmarks/bench_dask.py [--rows 20000] [--block 2000]
        [--episodes 2000] [--seed 0]
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread each

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import dask  # noqa: E402
import distributed  # noqa: E402
import joblib  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402

# the batched benchmark's features: the same 640-d episodes in both tables
from bench_batched import features  # noqa: E402
from joblib import parallel_config  # noqa: E402

import skfewshot  # noqa: E402
from skfewshot import BackboneTransformer, PrototypeClassifier  # noqa: E402
from skfewshot.model_selection import evaluate_episodes  # noqa: E402
from skfewshot.models import Conv4  # noqa: E402

EPISODES = dict(n_way=5, n_shot=5, n_query=15, random_state=0)


def images(block, rows, seed):
    """The ``rows`` images of block ``block``, the same wherever drawn."""
    rng = np.random.default_rng([seed, block])
    return rng.random((rows, 1, 28, 28), dtype=np.float32)


def embed_block(block, rows, seed, transformer):
    """Draw one block of images on the worker and embed it."""
    return transformer.transform(images(block, rows, seed))


def _cpu_seconds():
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _peak_mib():
    """This process's peak resident memory (VmHWM) in MiB since the last reset.

    Not ``ru_maxrss``: Linux carries it across ``fork`` and ``exec``, so a
    worker would report its parent's peak.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def _reset_peak():
    """Restart this process's VmHWM from its current RSS (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def _executed(dask_worker):
    return dask_worker.state.executed_count


class Measure:
    """Wall and CPU seconds of a block, in the client and on the workers."""

    def __init__(self, client=None):
        self.client = client

    def _workers_cpu(self):
        if self.client is None:
            return 0.0
        return sum(self.client.run(_cpu_seconds).values())

    def __enter__(self):
        _reset_peak()
        if self.client is not None:
            self.client.run(_reset_peak)
        self.worker_cpu = self._workers_cpu()
        self.tasks = self.start_tasks()
        self.cpu = _cpu_seconds()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.start
        self.cpu = _cpu_seconds() - self.cpu
        self.peak = _peak_mib()
        self.worker_cpu = self._workers_cpu() - self.worker_cpu
        if self.client is None:
            self.worker_peaks, self.tasks = [], 0
        else:
            self.worker_peaks = sorted(self.client.run(_peak_mib).values())
            self.tasks = sum(self.client.run(_executed).values()) - self.tasks

    def start_tasks(self):
        return 0 if self.client is None else sum(self.client.run(_executed).values())


def cluster(n_workers, threads=1):
    """A fresh local cluster of ``n_workers`` processes of ``threads`` threads."""
    local = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(local, timeout="60s")
    client.wait_for_workers(n_workers, timeout=60)
    return local, client


def _startup(seconds):
    return f", cluster start {seconds:.1f} s (untimed)" if seconds else ""


def row(job, where, m, n_items, unit, extra=""):
    peaks = "/".join(f"{p:.0f}" for p in m.worker_peaks) or "-"
    print(
        f"{job:<10} {where:<38} {m.wall:>7.2f} {m.cpu:>8.2f} {m.worker_cpu:>8.2f} "
        f"{1000 * m.wall / n_items:>8.3f} {unit:<8} {m.tasks or '-':>6} "
        f"{peaks:>11} {m.peak:>7.0f}  {extra}",
        flush=True,
    )


def embedding(args, transformer, n_workers):
    """Embed ``args.rows`` images on a fresh cluster (or in the client)."""
    blocks = list(range(-(-args.rows // args.block)))
    sizes = [min(args.block, args.rows - b * args.block) for b in blocks]
    embed_block(0, 8, args.seed, transformer)  # warm-up: first forward
    if n_workers == 0:
        with Measure() as m:
            out = np.concatenate(
                [
                    embed_block(b, s, args.seed, transformer)
                    for b, s in zip(blocks, sizes)
                ]
            )
        return m, out, 0.0
    start = time.perf_counter()
    local, client = cluster(n_workers)
    startup = time.perf_counter() - start
    try:
        # warm-up: every worker imports torch and runs one forward, untimed
        client.run(embed_block, 0, 8, args.seed, transformer)
        with Measure(client) as m:
            remote = client.scatter(transformer, broadcast=True)
            futures = client.map(
                embed_block,
                blocks,
                sizes,
                seed=args.seed,
                transformer=remote,
                pure=False,
            )
            out = np.concatenate(client.gather(futures))
    finally:
        client.close()
        local.close()
    return m, out, startup


def evaluation(X, y, n_episodes, backend):
    """Per-episode (or batched) evaluation under ``backend``.

    Returns the ``Measure``, the scores and the cluster's start-up seconds.
    One untimed 20-episode run first warms up the backend (loky's and the
    workers' processes import skfewshot and torch).
    """
    head = PrototypeClassifier(unlabelled_label=-1)
    kwargs = dict(EPISODES, n_episodes=n_episodes)
    warm = dict(EPISODES, n_episodes=20)
    if backend == "batched":
        evaluate_episodes(PrototypeClassifier(), X, y, **warm)
        with Measure() as m:
            scores = evaluate_episodes(PrototypeClassifier(), X, y, **kwargs)
        return m, scores, 0.0
    if backend in ("sequential", "loky"):
        n_jobs = 1 if backend == "sequential" else 2
        with parallel_config(backend="loky"):
            evaluate_episodes(head, X, y, n_jobs=n_jobs, **warm)
            with Measure() as m:
                scores = evaluate_episodes(head, X, y, n_jobs=n_jobs, **kwargs)
        return m, scores, 0.0
    start = time.perf_counter()
    local, client = cluster(*backend)
    startup = time.perf_counter() - start
    try:
        # joblib's dask backend replaces n_jobs by the cluster's thread count:
        # with one single-threaded worker that is 1, which joblib runs
        # sequentially in the client (nothing reaches the worker)
        with parallel_config(backend="dask"):
            evaluate_episodes(head, X, y, n_jobs=2, **warm)
            with Measure(client) as m:
                scores = evaluate_episodes(head, X, y, n_jobs=2, **kwargs)
    finally:
        client.close()
        local.close()
    return m, scores, startup


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--block", type=int, default=2_000)
    parser.add_argument("--episodes", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} logical "
        f"cores ({len(os.sched_getaffinity(0))} usable), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; Python "
        f"{platform.python_version()}, skfewshot {skfewshot.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} thread), "
        f"dask {dask.__version__}, distributed {distributed.__version__}, "
        f"joblib {joblib.__version__}, scikit-learn {sklearn.__version__}"
    )
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"embedding: {args.rows} x 1x28x28 float32 images (seed {args.seed}, "
        f"blocks of {args.block}) -> Conv4(hidden=32) features; evaluation: "
        f"{args.episodes} 5-way 5-shot 15-query episodes of 640-d features "
        "(seed 0, random_state=0)"
    )
    print(
        f"{'job':<10} {'where':<38} {'wall s':>7} {'client':>8} {'workers':>8} "
        f"{'ms/item':>8} {'item':<8} {'tasks':>6} {'worker MiB':>11} "
        f"{'client':>7}  notes"
    )
    print(f"{'':<10} {'':<38} {'':>7} {'CPU s':>8} {'CPU s':>8}")

    torch.manual_seed(args.seed)
    transformer = BackboneTransformer(Conv4(hidden=32), device="cpu", cache=False)
    transformer.fit(images(0, 1, args.seed))
    reference = None
    for n_workers, where in [
        (0, "client only (no Dask)"),
        (1, "Dask, 1 worker"),
        (2, "Dask, 2 workers"),
    ]:
        m, out, startup = embedding(args, transformer, n_workers)
        if reference is None:
            reference = out
        same = np.allclose(out, reference, rtol=1e-5, atol=1e-6)
        row(
            "embedding",
            where,
            m,
            args.rows,
            "row",
            f"{out.shape}, same={same}" + _startup(startup),
        )

    X, y = features()
    base = ref = None
    for backend, where in [
        ("batched", "batched default (client)"),
        ("sequential", "per-episode, sequential n_jobs=1"),
        ("loky", "per-episode, loky n_jobs=2"),
        ((1, 1), "per-episode, Dask 1 worker"),
        ((1, 2), "per-episode, Dask 1 worker x 2 threads"),
        ((2, 1), "per-episode, Dask 2 workers"),
    ]:
        m, scores, startup = evaluation(X, y, args.episodes, backend)
        workers = {"batched": 1, "sequential": 1, "loky": 2}.get(backend)
        note = f"acc {100 * scores.mean:.2f}%"
        if workers is None:  # Dask: the processes that ran tasks
            workers = backend[0] if m.tasks else 1
            if not m.tasks:
                note += ", ran in the client (1 cluster thread: joblib goes sequential)"
        if backend == "sequential":
            base = m.wall / args.episodes
        if base is not None and backend != "sequential":
            note += f", identical={np.array_equal(scores.accuracies, ref)}"
            overhead = 1000 * (m.wall * workers / args.episodes - base)
            note += f", overhead {overhead:+.3f} ms/episode"
        if backend == "sequential":
            ref = scores.accuracies
        row("evaluation", where, m, args.episodes, "episode", note + _startup(startup))


if __name__ == "__main__":
    main()

"""Peak memory per Dask worker while embedding a dask.array of images (issue 13.2).

``N`` random 28x28 grayscale images (``--rows``, several values; drawn by
``dask.array.random`` on the workers, block by block, so the client never
holds them) go through a ``BackboneTransformer(Conv4(hidden=32),
cache=False)`` (random weights, ``torch.manual_seed(0)``) with
``skfewshot.dask.transform_blocks``: the fitted transformer enters the graph
once (each worker unpickles it once) and one task per block of ``--block``
images runs ``transform``. Two sinks:

sum
    the features are reduced on the workers (their column sums come back):
    a worker holds one block of images and its features at a time.
gather
    the features come back to the client (``client.compute``): each worker
    keeps its blocks' features until the client has them all.

Each row count and sink gets a fresh ``LocalCluster(n_workers=2,
threads_per_worker=1, processes=True)``; every worker runs one untimed
forward first, then its peak resident memory (VmHWM) is reset, so the peak
belongs to the job. ``OMP_NUM_THREADS=1`` for the client and the workers.

Usage::

    python benchmarks/bench_dask_embedding.py [--rows 10000 100000]
        [--block 2000] [--sinks sum gather] [--seed 0]
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: one thread each

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import distributed  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_dask import _cpu_seconds, _peak_mib, _reset_peak  # noqa: E402

from skfewshot import BackboneTransformer  # noqa: E402
from skfewshot.dask import transform_blocks  # noqa: E402
from skfewshot.models import Conv4  # noqa: E402


def _warm_up(transformer):
    transformer.transform(np.zeros((8, 1, 28, 28), np.float32))


def run(n_rows, block, sink, seed):
    torch.manual_seed(0)
    transformer = BackboneTransformer(Conv4(in_channels=1, hidden=32), cache=False)
    transformer.set_params(device="cpu").fit(np.zeros((8, 1, 28, 28), np.float32))
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2)
        client.run(_warm_up, transformer)
        client.run(_reset_peak)
        _reset_peak()
        cpu0 = sum(client.run(_cpu_seconds).values())
        start = time.perf_counter()
        images = da.random.default_rng(seed).random(
            (n_rows, 1, 28, 28), chunks=(block, 1, 28, 28), dtype=np.float32
        )
        features = transform_blocks(transformer, images)
        job = features.sum(axis=0) if sink == "sum" else features
        out = client.compute(job, sync=True)
        wall = time.perf_counter() - start
        cpu = sum(client.run(_cpu_seconds).values()) - cpu0
        peaks = sorted(client.run(_peak_mib).values())
    finally:
        client.close()
        cluster.close()
    assert out.dtype == np.float32 and np.isfinite(out).all()
    return wall, cpu, peaks, _peak_mib(), out.nbytes / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--block", type=int, default=2000)
    parser.add_argument("--sinks", nargs="+", default=["sum", "gather"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.2f}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, dask {dask.__version__}, distributed "
        f"{distributed.__version__}; block {args.block}, seed {args.seed}"
    )
    print(
        f"{'rows':>9} {'sink':<7} {'wall s':>7} {'wkr CPU s':>9} "
        f"{'ms/row':>7} {'peak MiB per worker':>20} {'client MiB':>10} {'out MiB':>8}"
    )
    for sink in args.sinks:
        for n_rows in args.rows:
            wall, cpu, peaks, client_peak, out_mib = run(
                n_rows, args.block, sink, args.seed
            )
            print(
                f"{n_rows:>9} {sink:<7} {wall:>7.2f} {cpu:>9.2f} "
                f"{1000 * wall / n_rows:>7.3f} "
                f"{', '.join(f'{p:.0f}' for p in peaks):>20} "
                f"{client_peak:>10.0f} {out_mib:>8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()

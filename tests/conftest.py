"""Shared fixtures: tiny episodes and where the real data (../shared/data) is."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Under pytest-xdist, give each worker its share of the cores, at least two.

    The README's test command runs ``-n auto``: one worker per core, each of
    which would otherwise start a thread per core in torch and in BLAS. Two
    threads at least keep the multi-threaded kernels under test (``.ci/run``
    tests one thread in a pass of its own); a thread count set in the
    environment, as that pass sets it, is left alone.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch
    from threadpoolctl import threadpool_limits

    threads = max(2, (os.cpu_count() or 2) // workers)
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (or ``$SKFEWSHOT_SHARED_DATA``)."""
    return Path(
        os.environ.get("SKFEWSHOT_SHARED_DATA", ROOT.parent / "shared" / "data")
    )


@pytest.fixture
def shared_data():
    """Path to ../shared/data; skips the test with a reason when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(
            f"real data folder {path} is absent (it sits beside the checkout in CI)"
        )
    return path


@pytest.fixture
def episode():
    """A 5-way 5-shot episode of 16-d features with 15 queries per class.

    Returns (X_support, y_support, X_query, y_query); classes are well separated
    Gaussian blobs so any sensible head classifies most queries right.
    """
    rng = np.random.RandomState(0)
    n_way, n_shot, n_query, dim = 5, 5, 15, 16
    centers = rng.normal(scale=3.0, size=(n_way, dim))

    def draw(k):
        X = np.concatenate([c + rng.normal(size=(k, dim)) for c in centers])
        y = np.repeat(np.arange(n_way), k)
        return X.astype(np.float32), y

    Xs, ys = draw(n_shot)
    Xq, yq = draw(n_query)
    return Xs, ys, Xq, yq


def build_omniglot_runs(shared_data, root, n_runs=2, n_way=20):
    """Write Omniglot one-shot runs in the published layout from small2 images.

    Returns ``{run: (support files, query files, query classes)}``.
    """
    zip_path = shared_data / "omniglot" / "images_background_small2.zip"
    rng = np.random.RandomState(0)
    expected = {}
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".png"))
        by_char = {}
        for name in names:
            by_char.setdefault(name.rsplit("/", 1)[0], []).append(name)
        chars = [c for c in by_char if c.split("/")[1] == "Japanese_(katakana)"]
        for r in range(1, n_runs + 1):
            run = f"run{r:02d}"
            (root / run / "training").mkdir(parents=True)
            (root / run / "test").mkdir()
            picked = rng.choice(len(chars), n_way, replace=False)
            query_class = rng.permutation(n_way) + 1  # item k shows class query_class
            lines, support, query = [], {}, []
            for c, index in enumerate(picked, start=1):
                support[c] = by_char[chars[index]][0]
                (root / run / "training" / f"class{c:02d}.png").write_bytes(
                    archive.read(support[c])
                )
            for k, c in enumerate(query_class, start=1):
                source = by_char[chars[picked[c - 1]]][1]
                query.append(source)
                (root / run / "test" / f"item{k:02d}.png").write_bytes(
                    archive.read(source)
                )
                lines.append(
                    f"{run}/test/item{k:02d}.png {run}/training/class{c:02d}.png"
                )
            (root / run / "class_labels.txt").write_text("\n".join(lines) + "\n")
            expected[run] = (support, query, query_class)
    return expected


@pytest.fixture
def base():
    """Digits images of the base classes 0-4 (``(X, y)``), for the trainers."""
    from _training_testing import base_classes

    return base_classes()


@pytest.fixture
def novel():
    """Digits images of the novel classes 5-9 (``(X, y)``), for the trainers."""
    from _training_testing import novel_classes

    return novel_classes()


@pytest.fixture(scope="module")
def client():
    """A ``dask.distributed`` client of two worker processes (one thread
    each), shared by one test module and closed when it is done; the module
    skips itself when ``distributed`` is not installed."""
    import logging

    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # a free port: None still takes 8787
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, timeout="60s")
    try:
        client.wait_for_workers(2, timeout=60)
        yield client
    finally:
        client.close()
        cluster.close()

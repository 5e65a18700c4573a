"""Frozen transformers over ``dask.array`` inputs, block by block.

Requires ``dask`` (``pip install "skfewshot[dask]"``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

try:
    import dask
    import dask.array as da
    import dask.base
except ImportError as error:
    raise ImportError(
        "skfewshot.dask needs dask.array: pip install 'skfewshot[dask]'."
    ) from error

from ._utils import rebuildable_future

__all__ = ["transform_blocks"]


def transform_blocks(transformer: Any, X: Any) -> da.Array:
    """Transform a ``dask.array`` block by block with a fitted frozen transformer.

    One task per block of rows runs ``transformer.transform`` on whole
    samples (the trailing axes of ``X`` are rechunked into one block first).
    Each worker holds one copy of the transformer and reuses it for all its
    blocks (passing it to ``map_blocks`` directly would unpickle it in every
    task): with a ``dask.distributed`` client (the default client), it goes
    to the cluster now, as the future of a task that returns it (each worker
    fetches it once; a worker that dies with the only copy loses nothing, as
    the scheduler runs that task again); otherwise (no client, or another
    scheduler in effect, as in ``with dask.config.set(scheduler="sync"):``)
    a copy of it, taken now, enters the graph once as a ``dask.delayed``
    object. Either way the blocks use the transformer as it is at this call
    (without a client: one copy of its module in memory beside the
    original). The blocks run when the result is computed: a result made
    for a client must be computed on it while it is open (the graph holds
    its future; another scheduler, or the closed client, raises dask's
    "Missing dependency" error). Empty blocks (e.g. after a boolean
    mask) give no rows; an error of ``transform`` names the rows of ``X``
    its block holds.

    Parameters
    ----------
    transformer : fitted estimator with ``frozen_features = True``
        A :class:`~skfewshot.BackboneTransformer` or
        :class:`~skfewshot.text.SentenceEncoder`: its ``transform`` maps each
        row independently to float32 features, so blocks give the rows of
        one call on all of ``X``. Set ``cache=False`` for a one-pass job: a
        worker would otherwise also keep up to ``cache_size`` rows of
        features in its process-wide cache.

    X : dask.array.Array of shape (n_samples, ...)
        Inputs as ``transformer.transform`` takes them (images, or a 1-D
        array of texts), chunked along axis 0 as the tasks should be.

    Returns
    -------
    features : dask.array.Array of shape (n_samples, n_features_out), dtype float32
        Chunked like the rows of ``X``, one block of columns. The heads and
        :func:`~skfewshot.model_selection.evaluate_episodes` accept it (they
        compute it into memory first).

    Raises
    ------
    TypeError
        If ``X`` is not a ``dask.array.Array`` or ``transformer`` is not
        frozen.
    sklearn.exceptions.NotFittedError
        If ``transformer`` is not fitted.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import torch
    >>> from skfewshot import BackboneTransformer
    >>> from skfewshot.dask import transform_blocks
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16))
    >>> X = np.random.RandomState(0).rand(10, 8, 8).astype(np.float32)
    >>> backbone = BackboneTransformer(net, device="cpu", cache=False).fit(X)
    >>> features = transform_blocks(backbone, da.from_array(X, chunks=4))
    >>> features.chunks
    ((4, 4, 2), (16,))
    >>> np.allclose(features.compute(), backbone.transform(X), rtol=1e-5, atol=1e-6)
    True
    """
    if not isinstance(X, da.Array):
        raise TypeError(
            f"transform_blocks takes a dask.array.Array as X; got "
            f"{type(X).__name__}. Call transformer.transform on an in-memory array."
        )
    if not getattr(transformer, "frozen_features", False):
        raise TypeError(
            f"transform_blocks needs a frozen transformer (frozen_features = True: "
            f"fit learns nothing and transform maps each row on its own); "
            f"{type(transformer).__name__} is not one."
        )
    check_is_fitted(transformer)
    width = len(transformer.get_feature_names_out())
    X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    return X.map_blocks(
        _transform_block,
        _one_copy_per_worker(transformer),
        width,
        drop_axis=list(range(2, X.ndim)),
        new_axis=[1] if X.ndim == 1 else None,
        chunks=(X.chunks[0], (width,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),  # transform refuses 0 rows
    )


def _transform_block(block, transformer, width, block_info=None):
    """``transformer.transform(block)``: 0 rows give 0 rows (transform refuses
    them); an error names the rows of the whole ``X`` the block holds."""
    if len(block) == 0:
        return np.empty((0, width), np.float32)
    try:
        return transformer.transform(block)
    except ValueError as exc:
        info = block_info[0]
        start, stop = info["array-location"][0]
        where = (
            f"rows {start} to {stop - 1} of X"
            if start == start  # not NaN: the chunk sizes are known
            else f"block {info['chunk-location'][0]} of the rows of X"
        )
        raise ValueError(
            f"{where} (one dask block; the row numbers below count from its first "
            f"row): {exc}"
        ) from exc


def _one_copy_per_worker(transformer):
    """A rebuildable future on the default distributed client when it is the
    scheduler in effect, else a delayed copy: either way the transformer as it
    is now, not when computed."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client
        client = None
    scheduler = dask.base.get_scheduler()
    if client is None or getattr(scheduler, "__self__", None) is not client:
        # e.g. dask.config.set(scheduler="sync") beside a client
        return dask.delayed(copy.deepcopy(transformer), pure=False)
    return rebuildable_future(client, transformer)

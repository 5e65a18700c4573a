"""Frozen transformers over ``dask.array`` inputs, block by block.

Requires ``dask`` (``pip install "skfewshot[dask]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

try:
    import dask
    import dask.array as da
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
    the scheduler runs that task again); otherwise it enters the graph once
    as a ``dask.delayed`` object. The blocks run when the result is computed.

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
        drop_axis=list(range(2, X.ndim)),
        new_axis=[1] if X.ndim == 1 else None,
        chunks=(X.chunks[0], (width,)),
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),  # transform refuses 0 rows
    )


def _transform_block(block, transformer):
    return transformer.transform(block)


def _one_copy_per_worker(transformer):
    """A rebuildable future on the default distributed client, else a delayed."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):  # no distributed, or no client
        return dask.delayed(transformer)
    return rebuildable_future(client, transformer)

"""Batched episodes: many few-shot episodes of one head as one torch computation.

:func:`~skfewshot.model_selection.evaluate_episodes` fits a clone of the head
per episode. A head class whose episodes can be computed together declares
it with a method ``_fewshot_batch_predictor(self, X)`` (the name is
``skfewshot._episodes.BATCH_CAPABILITY``; assign one of this module's
functions to it in the class body). Given the pool of features ``X`` (a
float ndarray (n_samples, n_features), float32 kept and the rest float64, as
the heads' own validation converts; rows may be non-finite, but no episode
that draws one is ever passed on), it returns a *batch predictor*, or None
when the head's parameters ask for something the batched computation
 does not do (then every episode takes the per-episode path).
The batch predictor is called as ``predict(support, codes, query,
n_classes)`` on a stack of ``B`` episodes of equal shapes:

- ``support``: int ndarray (B, n_support), row indices into ``X``;
- ``codes``: int ndarray (B, n_support), each support row's index into the
  episode's sorted classes (what ``np.unique`` makes of its labels, so that
  ties break as the head's ``predict`` breaks them);
- ``query``: int ndarray (B, n_query), row indices into ``X``;

and returns the predicted codes of the queries, an int ndarray (B, n_query),
identical (up to float rounding of near ties) to fitting the head on each
support set and predicting its queries; or None when this batch must take
the per-episode path (e.g. logits that overflow, which the head handles or
reports itself).

The module imports torch only inside its functions, so a head class can
declare the capability without importing torch.
"""

from __future__ import annotations

import math

from skfewshot._base import _accurate_squares

__all__ = ["prototype_batch_predictor"]

#: Parameters of the prototype head that the batched computation implements.
_PROTOTYPE_PARAMS = frozenset({"metric", "center", "scale"})

#: Options of the prototype head that are batched only at these values (an
#: ``unlabelled_label`` could make a drawn class unlabelled; the transductive
#: rectification is not batched). A head with a parameter in neither mapping
#: (an option added later) is not batched at all.
_PROTOTYPE_UNBATCHED_OPTIONS = {"unlabelled_label": None, "transductive": False}


def prototype_batch_predictor(head, X):
    """Batch predictor of a prototype head (``PrototypeClassifier`` semantics).

    Parameters
    ----------
    head : estimator
        An unfitted head with the parameters of
        :class:`~skfewshot.prototype.PrototypeClassifier`; they are validated
        as ``fit`` validates them.
    X : ndarray of shape (n_samples, n_features)
        The pool of float features the episodes index.

    Returns
    -------
    predict : callable or None
        The batch predictor described in the module docstring, computing on
        ``device="auto"`` (CUDA, then MPS, then the CPU; ``X`` is moved there
        once). None when the head has a parameter this function does not know
        (an option added later), an ``unlabelled_label`` (a drawn class could
        then be unlabelled) or ``transductive=True`` (the rectification is
        not batched): the per-episode path decides.
    """
    head._validate_params()
    params = head.get_params(deep=False)
    options = {
        name: value for name, value in params.items() if name not in _PROTOTYPE_PARAMS
    }
    if not _PROTOTYPE_PARAMS <= set(params) or any(
        name not in _PROTOTYPE_UNBATCHED_OPTIONS
        or value is not _PROTOTYPE_UNBATCHED_OPTIONS[name]
        for name, value in options.items()
    ):
        return None
    import torch

    from skfewshot._torch_utils import resolve_device

    device = resolve_device("auto")
    if device.type == "mps" and X.dtype != "float32":
        device = torch.device("cpu")  # MPS has no float64
    pool = torch.as_tensor(X, device=device)  # no copy on the CPU
    metric, center, scale = params["metric"], params["center"], params["scale"]

    def predict(support, codes, query, n_classes):
        with torch.inference_mode(), _cpu_threads(device):
            return _prototype_predictions(
                pool[torch.as_tensor(support, device=device)],
                torch.as_tensor(codes, device=device),
                pool[torch.as_tensor(query, device=device)],
                n_classes,
                metric,
                center,
                scale,
            )

    return predict


def _prototype_predictions(S, codes, Q, n_classes, metric, center, scale):
    """Predicted codes (B, n_q) of stacked episodes, or None on overflow."""
    import torch

    M = _class_means(S, codes, n_classes)
    if center:  # the head's mean_: coefficient 1 / n_support per row
        mean = (S * (1.0 / S.shape[1])).sum(dim=1, keepdim=True)
        Q, M = Q - mean, M - mean
    if metric == "cosine":
        logits = _scaled(_cosines(Q, _l2_normalize(M)), scale)
    elif metric == "dot":
        logits = Q @ M.mT
    else:
        logits = -(
            Q.square().sum(-1, keepdim=True)
            - 2 * (Q @ M.mT)
            + M.square().sum(-1).unsqueeze(1)
        ).clamp_min(0)
    if not torch.isfinite(logits).all():
        return None  # the head's own float64 retry or error decides
    return logits.argmax(dim=-1).cpu().numpy()


def _cpu_threads(device):
    """One torch CPU thread on the CPU (a batch is small: on a busy 2-core
    machine, OpenMP threads made it 3 to 5 times slower); nothing elsewhere."""
    import contextlib

    from skfewshot._torch_utils import single_thread

    return single_thread() if device.type == "cpu" else contextlib.nullcontext()


def _cosines(Q, M_unit):
    """Cosine of each query row with each unit row of ``M_unit``: (B, n_q, n_c).

    ``(Q @ M_unit.T) / |q|`` in one pass over the queries, the same cosines
    as normalising the queries first (up to rounding); batches whose query
    norms are not accurately representable (rows near the dtype's limits)
    normalise the queries scale-safely first instead.
    """
    import torch

    norms = torch.linalg.vector_norm(Q, dim=-1, keepdim=True)
    info = torch.finfo(Q.dtype)
    low, high = math.sqrt(Q.shape[-1] * (info.tiny / info.eps)), math.sqrt(info.max)
    if bool(((norms >= low) & (norms <= high)).all()):
        return (Q @ M_unit.mT) / norms
    return _l2_normalize(Q) @ M_unit.mT


def _class_means(S, codes, n_classes):
    """Per-episode class means (B, n_classes, d) by one batched matmul.

    Each mean is a convex combination of rows (coefficient ``1 / count``), as
    the head computes it, so it cannot overflow whatever the scale of ``S``.
    """
    import torch

    one_hot = torch.nn.functional.one_hot(codes, n_classes).mT.to(S.dtype)
    return (one_hot / one_hot.sum(dim=-1, keepdim=True)) @ S


def _l2_normalize(A):
    """Rows (last axis) of ``A`` scaled to unit norm, whatever their scale.

    The tensor twin of ``skfewshot._base._l2_normalize``: a row whose squared
    norm would overflow or lose precision to underflow is first multiplied by
    the power of two that brings its largest absolute entry into [0.5, 1)
    (exact), so the result does not depend on the scale of the rows; all-zero
    rows stay zero.
    """
    import torch

    squares = A.square().sum(dim=-1)
    accurate = _accurate_squares(squares, A.shape[-1], torch.finfo(A.dtype))
    if not bool(accurate.all()):
        exponent = torch.frexp(A.abs().amax(dim=-1)).exponent
        exponent = torch.where(accurate, 0, exponent)
        A = torch.ldexp(A, -exponent.unsqueeze(-1).to(A.dtype))
        squares = A.square().sum(dim=-1)
    norms = squares.sqrt()
    return A / torch.where(norms > 0, norms, 1).unsqueeze(-1)


def _scaled(cosines, scale):
    """``scale * cosines`` without overflow (float64 when the dtype could not)."""
    import torch

    if 2 * abs(scale) > torch.finfo(cosines.dtype).max:
        cosines = cosines.to(torch.float64).clamp(-1.0, 1.0)
    return cosines * scale

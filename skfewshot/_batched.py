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

__all__ = ["finetune_batch_predictor", "prototype_batch_predictor"]

#: Parameters of the prototype head that the batched computation implements
#: (``unknown_threshold`` acts only with an ``unknown_label``, which is
#: batched only at None: at any threshold the predictions are the classes').
_PROTOTYPE_PARAMS = frozenset(
    {"metric", "center", "scale", "unknown_threshold", "device"}
)

#: Options of the prototype head that are batched only at these values (an
#: ``unlabelled_label`` could make a drawn class unlabelled; the transductive
#: rectification and the ``unknown_label`` answer are not batched). A head
#: with a parameter in neither mapping (an option added later) is not batched
#: at all.
_PROTOTYPE_UNBATCHED_OPTIONS = {
    "unlabelled_label": None,
    "transductive": False,
    "unknown_label": None,
}

#: Parameters of the fine-tuned cosine head that the batched computation
#: implements; an ``unlabelled_label`` and an ``unknown_label`` are batched
#: only at None (so ``unknown_threshold``, which acts only with an
#: ``unknown_label``, changes nothing batched).
_FINETUNE_PARAMS = frozenset(
    {
        "unknown_threshold",
        "alpha",
        "entropy_weight",
        "marginal_weight",
        "scale",
        "learn_scale",
        "max_iter",
        "tol",
        "transductive",
        "device",
    }
)
_FINETUNE_UNBATCHED_OPTIONS = {"unlabelled_label": None, "unknown_label": None}


#: Appended to the warning about episodes that stopped before converging: the
#: two paths agree only at convergence (see ``evaluate_episodes``).
_PATH_NOTE = (
    " (their predictions then depend on the path: the batched line search is "
    "not SciPy's, so fitting each episode's head, as cross_val_score does, may "
    "label their queries differently)"
)


def _batched_params(head, implemented, unbatched_options):
    """The head's parameters if the batched computation covers them, else None.

    ``implemented`` names the parameters the computation implements at any
    value; ``unbatched_options`` maps each other parameter to the one value
    at which it is batched. The parameters are validated first, as ``fit``
    validates them. A parameter in neither (an option added to the head
    later) means None: the per-episode path decides.
    """
    head._validate_params()
    params = head.get_params(deep=False)
    options = {name: value for name, value in params.items() if name not in implemented}
    if not implemented <= set(params) or any(
        name not in unbatched_options or value is not unbatched_options[name]
        for name, value in options.items()
    ):
        return None
    return params


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
        the head's ``device`` ("auto": CUDA, then MPS, then the CPU; ``X`` is
        moved there once). None when the head has a parameter this function
        does not know (an option added later), an ``unlabelled_label`` (a
        drawn class could then be unlabelled), an ``unknown_label`` (the
        rejection is not batched) or ``transductive=True`` (the rectification
        is not batched): the per-episode path decides.
    """
    params = _batched_params(head, _PROTOTYPE_PARAMS, _PROTOTYPE_UNBATCHED_OPTIONS)
    if params is None:
        return None
    import torch

    from skfewshot._torch_utils import resolve_device

    device = resolve_device(params["device"])
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

    from skfewshot._torch_utils import l2_normalize

    M = _class_means(S, codes, n_classes)
    if center:  # the head's mean_: coefficient 1 / n_support per row
        mean = (S * (1.0 / S.shape[1])).sum(dim=1, keepdim=True)
        Q, M = Q - mean, M - mean
    if metric == "cosine":
        logits = _scaled(_cosines(Q, l2_normalize(M)), scale)
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


def finetune_batch_predictor(head, X):
    """Batch predictor of a fine-tuned cosine head (``FineTunedCosineClassifier``).

    Each episode's head is fitted as the per-episode path fits it (the same
    objective, from the same start, with L-BFGS and the same stopping rules,
    :func:`skfewshot._lbfgs.minimize_batched`) and, when transductive, adapted
    to its queries from the fitted state, then its queries are predicted: all
    the episodes of a batch at once.

    The episodes are solved in a basis of the span of their own normalised
    rows (the support, plus the queries when transductive): the start ``W0``
    and every gradient of the objective lie in that span, so the iterates
    never leave it, and L-BFGS, invariant under rotations, runs the same
    iteration on the coordinates in an orthonormal basis of it (at most
    ``n_rows`` of them instead of ``n_features``). The gradient test is made
    on the gradient in the features' coordinates, as the per-episode path
    makes it.

    Parameters
    ----------
    head : estimator
        An unfitted head with the parameters of
        :class:`~skfewshot.finetune.FineTunedCosineClassifier`; they are
        validated as ``fit`` validates them.
    X : ndarray of shape (n_samples, n_features)
        The pool of float features the episodes index.

    Returns
    -------
    predict : callable or None
        The batch predictor described in the module docstring, computing in
        float64 on the head's ``device``. None when the head has a parameter
        this function does not know, an ``unlabelled_label``, an
        ``unknown_label``, or a device
        without float64 (Apple MPS): the per-episode path decides.
    """
    params = _batched_params(head, _FINETUNE_PARAMS, _FINETUNE_UNBATCHED_OPTIONS)
    if params is None:
        return None
    import torch

    from skfewshot._torch_utils import resolve_device

    device = resolve_device(params["device"])
    if device.type == "mps":
        return None
    pool = torch.as_tensor(X, device=device)

    def predict(support, codes, query, n_classes):
        with torch.no_grad(), _cpu_threads(device):
            logits = _finetune_logits(
                pool[torch.as_tensor(support, device=device)],
                torch.as_tensor(codes, device=device),
                pool[torch.as_tensor(query, device=device)],
                n_classes,
                params,
            )
            if not torch.isfinite(logits).all():
                return None  # the head's own path reports it
            return logits.argmax(dim=-1).cpu().numpy()

    return predict


def _finetune_logits(S, codes, Q, n_classes, params):
    """Logits (B, n_q, n_classes) of the queries of stacked episodes."""
    import torch

    from skfewshot._torch_utils import l2_normalize

    f64 = torch.float64
    S_n, Q_n = l2_normalize(S).to(f64), l2_normalize(Q).to(f64)
    W0 = l2_normalize(_class_means(S, codes, n_classes)).to(f64)
    transductive = params["transductive"] and params["entropy_weight"] > 0
    basis = torch.linalg.qr((torch.cat([S_n, Q_n], dim=1) if transductive else S_n).mT)[
        0
    ]
    S_r, Q_r, W0_r = S_n @ basis, Q_n @ basis, W0 @ basis
    n_episodes, n_support = codes.shape
    support = (S_r, codes, S_r.new_full((n_episodes, n_support), 1 / n_support))
    state = (W0_r, S_r.new_zeros((n_episodes, n_classes)))
    state += (S_r.new_full((n_episodes,), math.log(params["scale"])),)
    if params["max_iter"] > 0:
        state = _fine_tune_batch(state, support, None, W0_r, basis, params)
        if transductive:
            n_query = Q_r.shape[1]
            queries = (Q_r, Q_r.new_full((n_episodes, n_query), 1 / n_query))
            state = _fine_tune_batch(state, support, queries, W0_r, basis, params)
    W, b, log_s = state
    W_unit = l2_normalize(W)  # a zero row (an all-zero class) stays zero
    return torch.exp(log_s)[:, None, None] * (Q_r @ W_unit.mT) + b[:, None, :]


def _fine_tune_batch(start, support, unlabelled, W0, basis, params):
    """``(W, b, log_s)`` of each episode after fine-tuning from ``start``.

    The batched twin of ``FineTunedCosineClassifier._fine_tune``: the same
    objective (:func:`skfewshot.finetune._objective`, whose tensors carry the
    episode as a batch dimension), variables (``W`` and ``b``, plus ``log s``
    when ``learn_scale``), start and stopping rules (``max_iter``, ``tol`` on
    the largest gradient entry, in the features' coordinates: ``basis``
    maps the episode's coordinates back to them). Warns as the head does
    when episodes run out of iterations or stop abnormally, adding that their
    results then depend on the path (``_PATH_NOTE``): the line search is a
    backtracking one, not SciPy's, so only converged episodes agree with the
    per-episode path.
    """
    import torch

    from skfewshot._lbfgs import minimize_batched
    from skfewshot.finetune import _objective, _warn_unconverged

    W_start, b_start, log_s_start = start
    n_episodes, n_classes, k = W_start.shape
    n_coef = n_classes * k
    learn_scale = params["learn_scale"]
    tol = params["tol"]

    def unpack(x, problems):
        W = x[:, :n_coef].view(-1, n_classes, k)
        b = x[:, n_coef : n_coef + n_classes]
        return W, b, x[:, -1] if learn_scale else log_s_start[problems]

    def select(tensors, problems):
        if tensors is None or problems.shape[0] == n_episodes:
            return tensors
        return tuple(t[problems] for t in tensors)

    def fun(x, problems):
        loss, grad_W, grad_b, grad_log_s = _objective(
            *unpack(x, problems),
            select(support, problems),
            select(unlabelled, problems),
            select((W0,), problems)[0],
            params["alpha"],
            params["entropy_weight"],
            marginal_weight=params["marginal_weight"],
        )
        grads = [grad_W.reshape(x.shape[0], -1), grad_b]
        if learn_scale:
            grads.append(grad_log_s[:, None])
        return loss, torch.cat(grads, dim=1)

    def largest_entry(g, problems):
        """The largest gradient entry in the features' coordinates, or a value
        on the same side of ``tol``: each row of the gradient of ``W`` there
        is its row here times the orthonormal ``basis.T``, whose largest entry
        lies between its norm / sqrt(n_features) and its norm; only problems
        those bounds leave undecided pay for the product."""
        grad_W = g[:, :n_coef].view(-1, n_classes, k)
        rest = g[:, n_coef:].abs().amax(dim=-1)
        norms = torch.linalg.vector_norm(grad_W, dim=-1).amax(dim=-1)
        measure = torch.maximum(norms, rest)
        undecided = (norms > tol) & (norms <= tol * math.sqrt(basis.shape[-2]))
        if bool(undecided.any()):
            rows = undecided.nonzero().squeeze(1)
            full = grad_W[rows] @ basis[problems[rows]].mT
            measure[rows] = torch.maximum(full.abs().amax(dim=(-2, -1)), rest[rows])
        return measure

    x0 = [W_start.reshape(n_episodes, -1), b_start]
    if learn_scale:
        x0.append(log_s_start[:, None])
    x, _, status = minimize_batched(
        fun,
        torch.cat(x0, dim=1),
        max_iter=params["max_iter"],
        tol=tol,
        grad_measure=largest_entry,
    )
    for code in (1, 2):  # out of iterations, abnormal stop: as the head warns
        n_stopped = int((status == code).sum())
        if n_stopped:
            _warn_unconverged(
                code,
                max_iter=params["max_iter"],
                tol=tol,
                detail=f" in {n_stopped} of {n_episodes} batched episodes{_PATH_NOTE}",
                stacklevel=2,
            )
    W, b, log_s = unpack(x, torch.arange(n_episodes, device=x.device))
    return W, b, log_s.clone()


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

    from skfewshot._torch_utils import l2_normalize

    norms = torch.linalg.vector_norm(Q, dim=-1, keepdim=True)
    info = torch.finfo(Q.dtype)
    low, high = math.sqrt(Q.shape[-1] * (info.tiny / info.eps)), math.sqrt(info.max)
    if bool(((norms >= low) & (norms <= high)).all()):
        return (Q @ M_unit.mT) / norms
    return l2_normalize(Q) @ M_unit.mT


def _class_means(S, codes, n_classes):
    """Per-episode class means (B, n_classes, d) by one batched matmul.

    Each mean is a convex combination of rows (coefficient ``1 / count``), as
    the head computes it, so it cannot overflow whatever the scale of ``S``.
    """
    import torch

    one_hot = torch.nn.functional.one_hot(codes, n_classes).mT.to(S.dtype)
    return (one_hot / one_hot.sum(dim=-1, keepdim=True)) @ S


def _scaled(cosines, scale):
    """``scale * cosines`` without overflow (float64 when the dtype could not)."""
    import torch

    if 2 * abs(scale) > torch.finfo(cosines.dtype).max:
        cosines = cosines.to(torch.float64).clamp(-1.0, 1.0)
    return cosines * scale

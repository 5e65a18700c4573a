"""Cosine classifier initialised with class prototypes and fine-tuned on the support."""

from __future__ import annotations

import functools
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import gen_batches
from sklearn.utils._param_validation import Interval
from threadpoolctl import ThreadpoolController

from skfewshot._base import (
    _UNKNOWN_LABEL_CONSTRAINT,
    _UNKNOWN_THRESHOLD_CONSTRAINT,
    _UNLABELLED_LABEL_CONSTRAINT,
    _class_means,
    _cosine_logits,
    _l2_normalize,
    _LogitClassifierMixin,
    _rescaled_weights,
    _validate_support,
)
from skfewshot._batched import finetune_batch_predictor
from skfewshot._torch_utils import (
    resolve_device,
    single_thread,
    to_device_tensor,
    to_host_array,
)

__all__ = ["FineTunedCosineClassifier"]

#: Rows per block of the objective: a block's float64 temporaries hold about
#: this many entries (4 MiB each), whatever the number of rows of the support.
_BLOCK_ENTRIES = 1 << 19


@functools.cache
def _threadpool_controller():
    """One :class:`threadpoolctl.ThreadpoolController`, built on first use."""
    return ThreadpoolController()


def _single_blas_thread(method):
    """Run ``method`` with one BLAS thread and one torch CPU thread.

    The arrays are tiny, and BLAS threads left spinning beside torch's OpenMP
    threads made a fit 10 to 100 times slower on a busy 2-core machine.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with (
            _threadpool_controller().limit(limits=1, user_api="blas"),
            single_thread(),
        ):
            return method(*args, **kwargs)

    return wrapper


class FineTunedCosineClassifier(_LogitClassifierMixin, ClassifierMixin, BaseEstimator):
    """Cosine classifier initialised with the prototypes, fine-tuned on the support.

    The logits of a query ``q`` are ``s * cos(w_c, q) + b_c``. ``fit`` starts
    from ``W = W0``, the L2-normalised class prototypes (weighted class means
    of the support features), and ``b = 0``, then minimises, full batch with
    SciPy's L-BFGS-B (objective and gradient computed in torch on ``device``),

    .. math::

        L(W, b, s) = \\frac{\\sum_{i \\in S} v_i \\, CE_i}{\\sum_{i \\in S} v_i}
        + \\alpha \\left(\\lVert \\hat W - W_0 \\rVert_F^2
        + \\lVert b \\rVert_2^2\\right)
        + \\lambda \\left(\\sum_{u \\in U} \\bar v_u H(p_u)
        - \\mu \\, H\\Big(\\sum_{u \\in U} \\bar v_u p_u\\Big)\\right),
        \\qquad \\bar v_u = \\frac{v_u}{\\sum_{u' \\in U} v_{u'}}

    where ``W_hat`` is ``W`` with its rows L2-normalised (so the penalty is
    ``2 alpha sum_c (1 - cos(w_c, w0_c)) + alpha ||b||^2``: it pulls the class
    directions, the only part of ``W`` the logits depend on, toward the
    prototypes), ``S`` are the labelled rows, ``CE_i`` the cross-entropy of row ``i``,
    ``v`` the sample weights, ``U`` the unlabelled rows (``y ==
    unlabelled_label``, see below), ``H(p_u)``
    the entropy of the predicted distribution of row ``u``,
    ``lambda = entropy_weight`` and ``mu = marginal_weight``; ``s`` is
    ``scale``, learned only if ``learn_scale=True``. This is the fine-tuning
    baseline of few-shot learning (Chen et al. [1]_) with, on the unlabelled
    rows, the conditional entropy term of Dhillon et al. [2]_ (minimised: each
    prediction confident) and the marginal entropy term of TIM (Boudiaf et
    al. [3]_; maximised: the predictions spread over the classes). With the
    default ``mu = 1`` the two make ``-lambda`` times the mutual information
    between the unlabelled rows and their predicted classes; ``mu = 0`` gives
    the conditional entropy alone, which can collapse: raising one class's
    bias makes every prediction confident, so on hard episodes it sends
    nearly all the queries to one class.

    Parameters
    ----------
    alpha : float, default=0.01
        Strength of the pull toward the initialisation (``W0``, ``b = 0``).
        The penalty compares unit vectors, so ``alpha`` does not depend on the
        scale of the features or of ``W``. Large
        values keep the prototype classifier (as ``alpha`` grows, predictions
        approach those of :class:`PrototypeClassifier` with
        ``metric="cosine"``). The default lets the head fit the support set
        while staying near the prototypes; the user guide shows how it was
        chosen, and :class:`~sklearn.model_selection.GridSearchCV` over
        :class:`~skfewshot.model_selection.EpisodicSplit` episodes tunes it
        for your data.

    entropy_weight : float, default=0.0
        Weight ``lambda`` of the mean prediction entropy of the unlabelled rows
        (rows of ``fit`` labelled ``unlabelled_label``, or the queries when
        ``transductive=True``). Zero ignores unlabelled rows.

    marginal_weight : float, default=1.0
        Weight ``mu`` of the entropy of the mean prediction of the unlabelled
        rows (the class marginal), relative to ``entropy_weight``: the
        objective maximises it with weight ``lambda * mu``. The default makes
        the transductive terms the mutual information of TIM, which keeps the
        predicted classes balanced (no collapse onto one class, for any
        ``entropy_weight``); ``0`` gives back the conditional entropy term
        alone (the objective of earlier releases, prone to collapse).

    scale : float, default=10.0
        Scale ``s`` (inverse temperature) of the cosine logits, and its
        starting value when ``learn_scale=True``.

    learn_scale : bool, default=False
        If True, ``s`` is fitted too (parametrised as ``exp(log s)`` and not
        regularised). On a support set that the head separates perfectly, the
        learned scale keeps growing, which makes :meth:`predict_proba` overconfident;
        hence the fixed default.

    unlabelled_label : int, str or None, default=None
        Label that marks the unlabelled rows of ``y`` in :meth:`fit`. With
        None every label, ``-1`` included, is a class. Set it to ``-1`` for
        scikit-learn's semi-supervised convention (or to any label that
        cannot be a class): those rows carry no class and enter only the
        entropy term (so they are ignored when ``entropy_weight=0``).

    max_iter : int, default=100
        Maximum number of L-BFGS-B iterations (a
        :class:`~sklearn.exceptions.ConvergenceWarning` says when they run
        out, or when L-BFGS-B stops abnormally: its line search found no
        decrease before the gradient met ``tol``). ``0`` skips fine-tuning:
        the classifier is then exactly the cosine prototype classifier. There
        is no learning rate: L-BFGS-B picks its step lengths by line search.

    tol : float, default=1e-6
        Stop when the largest absolute entry of the gradient falls below
        ``tol`` (L-BFGS-B's ``gtol``).

    transductive : bool, default=False
        If True, :meth:`predict`, :meth:`predict_proba`,
        :meth:`predict_log_proba` and :meth:`decision_function` adapt to the
        queries ``X`` they are given: starting from the fitted state, they
        minimise the objective above with ``X`` as the unlabelled rows (the
        labelled support from ``fit`` still enters through the cross-entropy),
        then score ``X``. The fitted state is not changed, so the same ``X``
        gives the same result every time and later calls are unaffected. With
        ``entropy_weight=0`` this objective is the one ``fit`` already
        minimised, so ``transductive=True`` changes nothing.

    device : str or torch.device, default="auto"
        Where the optimisation runs: ``"auto"`` picks CUDA, then Apple MPS,
        then the CPU. Computation is in float64 (float32 on MPS, which has no
        float64); the fitted state is numpy either way.

    unknown_label : int, str or None, default=None
        Opt-in "none of these" answer: with a label (e.g. ``-1`` or
        ``"unknown"``), :meth:`predict` returns it for the queries whose
        :meth:`score_samples` is below ``unknown_threshold_``;
        :meth:`predict_proba` and :meth:`decision_function` are unchanged
        (over ``classes_``, the known classes). It must not be a class of
        ``y`` nor equal ``unlabelled_label`` (``ValueError``). Predictions
        are an array holding both: string classes with a str label give a
        str array, numeric classes with an int label the classes' dtype
        (widened if needed; an object array when no dtype of their kind holds
        every class and the label exactly, e.g. ``uint64`` or bool classes
        with ``-1``), and a mix an object array.

    unknown_threshold : "auto" or float, default="auto"
        Threshold on :meth:`score_samples` (a cosine, in [-1, 1]) below
        which a query is ``unknown_label``; used only with an
        ``unknown_label``. A float (NaN is refused) is used as is.
        ``"auto"`` chooses it from the support set by leave-one-out: each
        support row is scored against the prototypes with its own class's
        prototype computed without it,
        and the threshold is the 5% quantile of those scores. With one row
        per class nothing can be left out: the threshold is then the largest
        cosine between a support row and another class's prototype (each
        row standing for a query of a class outside the support), and a
        ``UserWarning`` says it is a guess. :meth:`score_samples` is the
        cosine between the query and the nearest normalised prototype (``W0``,
        where fine-tuning starts), so that the ``"auto"`` leave-one-out
        threshold, computed on prototypes, is on the same scale; it does not
        depend on the other queries, even with
        ``transductive=True``.

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features)
        Class weight vectors ``W``; only their directions enter the logits and
        the objective, so their norms are whatever the optimiser left. A
        class whose support features are all zero has a zero prototype, which
        has no direction: its row stays zero (its cosines are 0, and only its
        bias is fine-tuned).

    intercept_ : ndarray of shape (n_classes,)
        Class biases ``b``.

    scale_ : float
        Scale ``s`` of the logits: ``scale``, or the learned value when
        ``learn_scale=True``.

    unknown_threshold_ : float
        Threshold of :meth:`score_samples` below which :meth:`predict`
        answers ``unknown_label``. Only set when ``unknown_label`` is not
        None.

    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted as :func:`numpy.unique` sorts them.

    n_iter_ : int
        Number of L-BFGS-B iterations run by ``fit``.

    n_features_in_ : int
        Number of features seen during :meth:`fit`.

    feature_names_in_ : ndarray of shape (n_features,)
        Names of features seen during :meth:`fit`. Defined only when ``X`` has
        feature names that are all strings.

    See Also
    --------
    PrototypeClassifier : The classifier this one starts from.

    Notes
    -----
    The labelled support rows are kept (privately, L2-normalised, in the
    dtype of ``X``) after ``fit`` because ``transductive=True`` needs them at
    prediction time. The normalisation rescales each row by a power of two
    first, so the head does not depend on the scale of the features (float32
    features around ``1e20`` give the same classifier as unscaled ones).
    The objective is evaluated in blocks of rows, so :meth:`fit` needs about
    one copy of ``X`` of extra memory, plus a bounded working space.

    :func:`~skfewshot.model_selection.evaluate_episodes` fine-tunes the
    episodes of this head (with ``unlabelled_label=None``, on a device with
    float64) a batch at a time: the same objective, start and stopping
    rules, solved for all the episodes at once by L-BFGS in the span of each
    episode's rows, where the iterates lie (see ``skfewshot._batched``). The
    inductive objective gives the same classifier to within ``tol``; with
    ``transductive=True`` (a non-convex objective) an episode may settle in
    another minimum than SciPy's line search reaches, so compare transductive
    results computed by one path.

    With two classes, :meth:`decision_function` returns the 1-D logit
    difference ``logits[:, 1] - logits[:, 0]``, as scikit-learn's binary
    classifiers do.

    References
    ----------
    .. [1] W.-Y. Chen, Y.-C. Liu, Z. Kira, Y.-C. F. Wang and J.-B. Huang,
       "A Closer Look at Few-shot Classification", ICLR 2019.
    .. [2] G. S. Dhillon, P. Chaudhari, A. Ravichandran and S. Soatto,
       "A Baseline for Few-Shot Image Classification", ICLR 2020.
    .. [3] M. Boudiaf, I. Ziko, J. Rony, J. Dolz, P. Piantanida and I. Ben Ayed,
       "Information Maximization for Few-Shot Learning", NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from skfewshot import FineTunedCosineClassifier
    >>> X = np.array([[1.0, 0.2], [0.9, -0.1], [0.1, 1.0], [-0.2, 0.8]])
    >>> y = np.array([0, 0, 1, 1])
    >>> clf = FineTunedCosineClassifier().fit(X, y)
    >>> clf.coef_.shape, clf.intercept_.shape, clf.scale_
    ((2, 2), (2,), 10.0)
    >>> clf.predict([[2.0, 0.5], [0.0, 3.0]])
    array([0, 1])

    Every label is a class, ``-1`` included; rows labelled
    ``unlabelled_label`` only enter the entropy term:

    >>> FineTunedCosineClassifier().fit(X, [-1, -1, 1, 1]).classes_
    array([-1,  1])
    >>> X_u = np.vstack([X, [[1.0, 1.0]]])
    >>> semi = FineTunedCosineClassifier(unlabelled_label=-1, entropy_weight=0.1)
    >>> semi.fit(X_u, [0, 0, 1, 1, -1]).classes_
    array([0, 1])
    """

    # evaluate_episodes fine-tunes many episodes of this head at once (the
    # same objective and stopping rules; see skfewshot._batched)
    _fewshot_batch_predictor = finetune_batch_predictor

    _parameter_constraints: dict = {
        "alpha": [Interval(Real, 0, None, closed="left")],
        "entropy_weight": [Interval(Real, 0, None, closed="left")],
        "marginal_weight": [Interval(Real, 0, None, closed="left")],
        "scale": [Interval(Real, 0, None, closed="neither")],
        "learn_scale": ["boolean"],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "transductive": ["boolean"],
        "device": [str, torch.device],
        "unlabelled_label": _UNLABELLED_LABEL_CONSTRAINT,
        "unknown_label": _UNKNOWN_LABEL_CONSTRAINT,
        "unknown_threshold": _UNKNOWN_THRESHOLD_CONSTRAINT,
    }

    def __init__(
        self,
        *,
        alpha: float = 1e-2,
        entropy_weight: float = 0.0,
        marginal_weight: float = 1.0,
        scale: float = 10.0,
        learn_scale: bool = False,
        max_iter: int = 100,
        tol: float = 1e-6,
        transductive: bool = False,
        device: str | torch.device = "auto",
        unlabelled_label: int | str | None = None,
        unknown_label: int | str | None = None,
        unknown_threshold: str | float = "auto",
    ) -> None:
        self.alpha = alpha
        self.entropy_weight = entropy_weight
        self.marginal_weight = marginal_weight
        self.scale = scale
        self.learn_scale = learn_scale
        self.max_iter = max_iter
        self.tol = tol
        self.transductive = transductive
        self.device = device
        self.unlabelled_label = unlabelled_label
        self.unknown_label = unknown_label
        self.unknown_threshold = unknown_threshold

    @_fit_context(prefer_skip_nested_validation=True)
    @_single_blas_thread
    def fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> FineTunedCosineClassifier:
        """Fine-tune the cosine classifier on the support set.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Support features (and unlabelled rows).
        y : array-like of shape (n_samples,)
            Support labels; rows labelled ``unlabelled_label`` (when it is not
            None) are unlabelled and only enter the entropy term.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights for the prototypes and the weighted
            means of the loss; an integer weight acts as repeating the row
            (up to the optimiser's ``tol``).

        Returns
        -------
        self : FineTunedCosineClassifier
            The fitted classifier.
        """
        X, self.classes_, codes, sample_weight = _validate_support(
            self, X, y, sample_weight
        )
        # W0: the L2-normalised weighted class means of the support.
        W0 = _l2_normalize(_class_means(X, codes, self.classes_, sample_weight))
        self._coef_init = W0.astype(np.float64, copy=False)
        weight = _rescaled_weights(sample_weight)
        labelled = codes >= 0
        unlabelled = None
        if labelled.all():  # one normalised copy of X, whatever its size
            self._support = (_l2_normalize(X), codes, weight)
        else:
            self._support = (
                _l2_normalize(X[labelled], copy=False),
                codes[labelled],
                weight[labelled],
            )
            if self.entropy_weight > 0:
                unlabelled = (
                    _l2_normalize(X[~labelled], copy=False),
                    weight[~labelled],
                )
        start = (self._coef_init, np.zeros(W0.shape[0]), float(self.scale))
        coef, intercept, scale, self.n_iter_ = self._fine_tune(start, unlabelled)
        self.coef_, self.intercept_, self.scale_ = coef, intercept, scale
        # the caller of fit, past _fit_context and _single_blas_thread
        self._fit_open_set(X, codes, sample_weight, stacklevel=5)
        return self

    def _novelty_directions(self):
        """The unit prototypes the fine-tuning starts from (``W0``).

        Not ``coef_``: the ``"auto"`` threshold is a leave-one-out statistic
        of prototype cosines, and fine-tuning moves the directions away from
        the support rows' mean, so the cosines to ``coef_`` lie on another
        scale (on digits, every query fell below the prototype threshold).
        """
        return self._coef_init

    def _fine_tune(self, start, unlabelled):
        """Minimise the objective from ``start = (W, b, s)`` with L-BFGS-B.

        ``unlabelled = (Q_u, weights_u)`` (L2-normalised rows) are the rows of
        the entropy term, or None. SciPy's L-BFGS-B drives the search; every
        objective and gradient evaluation (:func:`_objective`) runs in torch
        on the resolved device, in float64 (float32 on MPS), over blocks of
        the rows, which stay in their own dtype. Returns numpy
        ``(coef, intercept, scale, n_iter)``.
        """
        coef, intercept, scale = start
        if self.max_iter == 0:
            return coef.copy(), intercept.copy(), scale, 0
        device = resolve_device(self.device)
        dtype = torch.float32 if device.type == "mps" else torch.float64

        def tensor(a):
            return to_device_tensor(a, device=device, dtype=dtype)

        n_classes, n_features = coef.shape
        block_rows = max(1, _BLOCK_ENTRIES // max(n_features, n_classes))

        def rows(Q):
            # Float32 rows stay float32 (no float64 copy of X), unless they
            # fit in one block: then cast once here, not at every evaluation.
            small = Q.shape[0] <= block_rows
            row_dtype = torch.float32 if Q.dtype == np.float32 and not small else dtype
            return to_device_tensor(Q, device=device, dtype=row_dtype)

        def weights(v):
            return tensor(v / v.sum())

        Q_s, codes, weight_s = self._support
        support = (rows(Q_s), torch.as_tensor(codes, device=device), weights(weight_s))
        if unlabelled is not None and self.entropy_weight > 0 and unlabelled[1].any():
            unlabelled = (rows(unlabelled[0]), weights(unlabelled[1]))
        else:
            unlabelled = None
        W_init = tensor(self._coef_init)
        n_coef = n_classes * n_features
        log_scale = np.log(scale)
        fixed_log_s = tensor(log_scale)

        def loss_and_grad(x):
            params = tensor(x)
            W = params[:n_coef].view(n_classes, n_features)
            b = params[n_coef : n_coef + n_classes]
            log_s = params[-1] if self.learn_scale else fixed_log_s
            loss, grad_W, grad_b, grad_log_s = _objective(
                W,
                b,
                log_s,
                support,
                unlabelled,
                W_init,
                self.alpha,
                self.entropy_weight,
                marginal_weight=self.marginal_weight,
                block_rows=block_rows,
            )
            grads = [grad_W.reshape(-1), grad_b]
            if self.learn_scale:
                grads.append(grad_log_s.reshape(1))
            return loss.item(), to_host_array(torch.cat(grads), dtype=np.float64)

        x0 = [coef.ravel(), intercept] + ([[log_scale]] if self.learn_scale else [])
        result = minimize(
            loss_and_grad,
            np.concatenate(x0).astype(np.float64),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 0.0},
        )
        if result.status != 0:  # the iteration limit, or an abnormal stop
            _warn_unconverged(
                result.status,
                max_iter=self.max_iter,
                tol=self.tol,
                stacklevel=5,  # the caller of fit / predict*, past the wrappers
            )
        x = result.x
        if self.learn_scale:
            scale = float(np.exp(x[-1]))
        return (
            x[:n_coef].reshape(n_classes, n_features),
            x[n_coef : n_coef + n_classes].copy(),
            scale,
            int(result.nit),
        )

    @_single_blas_thread
    def _logits(self, X):
        """Validated ``X`` -> logits, adapted to ``X`` when transductive."""
        X = self._validate_queries(X)
        coef, intercept, scale = self.coef_, self.intercept_, self.scale_
        if self.transductive and self.entropy_weight > 0 and X.shape[0] > 0:
            start = (coef, intercept, scale)
            unlabelled = (_l2_normalize(X), np.ones(X.shape[0]))
            coef, intercept, scale, _ = self._fine_tune(start, unlabelled)
        return _cosine_logits(X, coef, scale) + intercept


def _warn_unconverged(status, *, max_iter, tol, detail="", stacklevel):
    """Warn that L-BFGS-B stopped short of ``tol``, for the status it gave.

    ``status`` is SciPy's: 1 when the ``max_iter`` iterations ran out, any
    other non-zero value for an abnormal stop (the line search found no step
    that decreases the objective; L-BFGS-B gives up once it fails from the
    steepest descent too). ``detail`` is appended to the stop's description
    (e.g. which batched episodes stopped); ``stacklevel`` is that of the
    warning as seen from this function's caller. One message for the
    per-episode (:meth:`FineTunedCosineClassifier._fine_tune`) and the batched
    (:mod:`skfewshot._batched`) paths.
    """
    if status == 1:
        stop = f"stopped after max_iter={max_iter} L-BFGS-B iterations"
        advice = "increase max_iter or tol"
    else:
        stop = (
            "stopped abnormally (the line search found no step that decreases "
            "the objective)"
        )
        advice = (
            "the fitted head is the last iterate, near a minimum if tol is below "
            "what rounding lets the gradient reach, possibly far from it "
            "otherwise: increase tol, or check the features for huge or "
            "degenerate values"
        )
    warnings.warn(
        f"FineTunedCosineClassifier {stop} with the largest gradient entry above "
        f"tol={tol}{detail}; {advice}.",
        ConvergenceWarning,
        stacklevel=stacklevel + 1,
    )


def _objective(
    W,
    b,
    log_s,
    support,
    unlabelled,
    W0,
    alpha,
    entropy_weight,
    *,
    marginal_weight=0.0,
    block_rows=None,
):
    """The fine-tuning objective and its gradient, in closed form.

    Every tensor may carry leading batch dimensions ``...`` (one problem per
    index, as :mod:`skfewshot._batched` solves many episodes at once); a
    single problem has none.

    Parameters
    ----------
    W, b, log_s : tensor
        Weights (..., n_classes, n_features), biases (..., n_classes), log of
        the scale (...).
    support : tuple of tensor
        ``(Q, codes, v)``: L2-normalised labelled rows (..., n, n_features),
        their class indices (..., n) and their weights (..., n), summing to 1.
    unlabelled : tuple of tensor or None
        ``(Q_u, v_u)``: L2-normalised unlabelled rows and their weights
        (summing to 1); ``None`` when the transductive terms are off.
    W0 : tensor
        The initialisation that ``alpha`` pulls ``W`` toward.
    alpha, entropy_weight : float
        Weights of the penalty and of the conditional entropy term.
    marginal_weight : float, default=0.0
        Weight of the marginal entropy term relative to ``entropy_weight``:
        the term is ``-entropy_weight * marginal_weight * H(p_bar)``, with
        ``p_bar`` the weighted mean prediction of the unlabelled rows. Zero
        gives the conditional entropy term alone.
    block_rows : int or None, default=None
        Rows per block: every term is a sum over rows, evaluated block by
        block, each block cast to the dtype of ``W``, so the working memory
        is bounded by the block, not by the number of rows. None: one block.

    Returns
    -------
    loss, grad_W, grad_b, grad_log_s : tensor
        The objective documented in :class:`FineTunedCosineClassifier` (shape
        ``...``) and its partial derivatives. Closed form instead of
        autograd: the problem is tiny, so the autograd graph would cost more
        than the arithmetic.
    """
    # A zero row (the prototype of a class whose support rows are all zero)
    # has no direction: its cosines are 0, as the heads' normalisation makes
    # them, and w / |w| is not even continuous there (any step off zero jumps
    # to a unit vector). Such a row stays fixed (zero gradient, divided by
    # one below) and the other classes are optimised as usual; dividing by a
    # clamped norm instead gave it gradients ~1e12 that stopped L-BFGS-B.
    norms = torch.linalg.vector_norm(W, dim=-1, keepdim=True)
    positive = norms > 0
    norms = torch.where(positive, norms, 1)
    W_n = W / norms
    s = torch.exp(log_s)
    s_rows = s[..., None, None]  # broadcasts over (rows, classes)
    b_rows = b.unsqueeze(-2)
    loss = W.new_zeros(W.shape[:-2])
    grad_W_n, grad_b, grad_s = (torch.zeros_like(t) for t in (W_n, b, s))

    def blocks(Q):
        """``(rows, Q_block, cos, log_p)`` for each block of the rows of ``Q``."""
        n_rows = Q.shape[-2]
        for rows in gen_batches(n_rows, block_rows or max(n_rows, 1)):
            Q_block = Q[..., rows, :].to(W.dtype)
            cos = Q_block @ W_n.mT
            yield rows, Q_block, cos, torch.log_softmax(s_rows * cos + b_rows, dim=-1)

    def add_gradient(grad_logits, Q_block, cos):
        """Chain rule from d loss / d logits to ``W_n``, ``b`` and ``s``."""
        nonlocal grad_W_n, grad_b, grad_s
        grad_W_n = grad_W_n + s_rows * (grad_logits.mT @ Q_block)
        grad_b = grad_b + grad_logits.sum(dim=-2)
        grad_s = grad_s + (grad_logits * cos).sum(dim=(-2, -1))

    Q, codes, v = support
    for rows, Q_block, cos, log_p in blocks(Q):
        v_block, codes_block = v[..., rows, None], codes[..., rows, None]
        loss = loss - (v_block * log_p.gather(-1, codes_block)).sum(dim=(-2, -1))
        # d loss / d logits of a weighted cross-entropy: v_i (p_i - onehot_i).
        grad_logits = v_block * log_p.exp()
        grad_logits.scatter_add_(-1, codes_block, -v_block)
        add_gradient(grad_logits, Q_block, cos)
    if unlabelled is not None:
        Q_u, v_u = unlabelled
        lam_m = entropy_weight * marginal_weight
        # The marginal term takes two passes over the rows; a single block is
        # computed once for both (more blocks are recomputed: bounded memory).
        one_block = block_rows is None or Q_u.shape[-2] <= block_rows
        kept = list(blocks(Q_u)) if lam_m and one_block else None
        log_p_bar = None
        if lam_m:  # - lam_m H(p_bar)
            log_p_bar = _log_marginal(kept or blocks(Q_u), v_u)
            loss = loss + lam_m * (log_p_bar.exp() * log_p_bar).sum(dim=-1)
            log_p_bar = log_p_bar.unsqueeze(-2)  # broadcasts over the rows
        for rows, Q_block, cos, log_p in kept or blocks(Q_u):
            p = log_p.exp()
            entropy = -(p * log_p).sum(dim=-1, keepdim=True)
            v_block = v_u[..., rows, None]
            loss = loss + entropy_weight * (v_block * entropy).sum(dim=(-2, -1))
            # d H / d logits = -p (log p + H), row by row.
            grad_logits = -entropy_weight * v_block * p * (log_p + entropy)
            if log_p_bar is not None:
                # d (-H(p_bar)) / d logits_u = v_u p_u (log p_bar - <p_u, log p_bar>)
                centred = log_p_bar - (p * log_p_bar).sum(dim=-1, keepdim=True)
                grad_logits = grad_logits + lam_m * v_block * p * centred
            add_gradient(grad_logits, Q_block, cos)
    delta = W_n - W0
    loss = loss + alpha * (delta.square().sum(dim=(-2, -1)) + b.square().sum(dim=-1))
    grad_W_n = grad_W_n + 2 * alpha * delta
    grad_b = grad_b + 2 * alpha * b
    # Through the normalisation w / |w|: remove the radial part, divide by |w|.
    grad_W = (grad_W_n - W_n * (W_n * grad_W_n).sum(dim=-1, keepdim=True)) / norms
    grad_W = torch.where(positive, grad_W, 0)
    return loss, grad_W, grad_b, s * grad_s


def _log_marginal(blocks_u, v_u):
    """``log p_bar``: the log of the weighted mean prediction ``sum_u v_u p_u``.

    One pass over ``blocks_u``, the blocks of the unlabelled rows (as
    ``blocks`` yields them in :func:`_objective`), by log-sum-exp, so it is
    finite wherever the rows' ``log p`` are (no ``log 0`` when every
    prediction of a class underflows). Shape (..., n_classes).
    """
    log_v = torch.log(v_u).unsqueeze(-1)
    log_p_bar = None
    for rows, _, _, log_p in blocks_u:
        block = torch.logsumexp(log_p + log_v[..., rows, :], dim=-2)
        log_p_bar = block if log_p_bar is None else torch.logaddexp(log_p_bar, block)
    return log_p_bar

"""Tests for skfewshot.finetune.FineTunedCosineClassifier."""

import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import softmax
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from skfewshot._base import _l2_normalize
from skfewshot.finetune import FineTunedCosineClassifier, _objective
from skfewshot.prototype import PrototypeClassifier


def _blobs(n_classes=3, n_per_class=6, dim=5, seed=0, noise=1.5):
    """Overlapping class blobs, so fine-tuning has something to change."""
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_classes, dim))
    X = np.concatenate(
        [c + noise * rng.normal(size=(n_per_class, dim)) for c in centers]
    )
    y = np.repeat(np.arange(n_classes), n_per_class)
    return X, y


X, Y = _blobs()
X_NEW, _ = _blobs(seed=1)
# Results of two runs of the same fit may differ by rounding (BLAS kernels
# can depend on memory alignment and thread count); L-BFGS-B stops within tol.
SAME = {"rtol": 1e-6, "atol": 1e-8}


@parametrize_with_checks(
    [
        FineTunedCosineClassifier(),
        FineTunedCosineClassifier(learn_scale=True, entropy_weight=0.5),
    ]
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        if estimator.learn_scale:
            # Expected: the checks' toy data are separable, so a learned scale
            # grows without bound and L-BFGS-B runs out of iterations.
            warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def _random_problem(seed=0, n=9, n_u=5, n_classes=3, dim=7):
    """A random float64 point and problem of :func:`_objective`."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    W, b, W0 = randn(n_classes, dim), randn(n_classes), randn(n_classes, dim)
    log_s = torch.tensor(1.3, dtype=torch.float64)
    Q, Q_u = F.normalize(randn(n, dim), dim=1), F.normalize(randn(n_u, dim), dim=1)
    v = torch.rand(n, generator=gen, dtype=torch.float64)
    v_u = torch.rand(n_u, generator=gen, dtype=torch.float64)
    codes = torch.arange(n) % n_classes
    return (W, b, log_s), (Q, codes, v / v.sum()), (Q_u, v_u / v_u.sum()), W0


def _reference_objective(params, support, unlabelled, W0, alpha, lam, mu):
    """The documented objective, term by term, for autograd."""
    W, b, log_s = params
    (Q, codes, v), (Q_u, v_u) = support, unlabelled
    W_n = F.normalize(W, dim=1)
    log_p = torch.log_softmax(log_s.exp() * Q @ W_n.T + b, dim=1)
    p_u = torch.softmax(log_s.exp() * Q_u @ W_n.T + b, dim=1)
    conditional = -(v_u[:, None] * p_u * p_u.log()).sum()
    p_bar = (v_u[:, None] * p_u).sum(dim=0)
    marginal = -(p_bar * p_bar.log()).sum()
    return (
        -(v * log_p[torch.arange(len(codes)), codes]).sum()
        + alpha * ((W_n - W0).square().sum() + b.square().sum())
        + lam * conditional
        - lam * mu * marginal
    )


@pytest.mark.parametrize("marginal_weight", [0.0, 0.6, 1.0])
def test_objective_gradient_matches_autograd(marginal_weight):
    params, support, unlabelled, W0 = _random_problem()
    terms = {"marginal_weight": marginal_weight}
    loss, *grads = _objective(*params, support, unlabelled, W0, 0.3, 0.7, **terms)
    # Blocks of rows (float32 rows cast to float64 block by block) sum the
    # same terms: equal up to float64 rounding.
    (Q, codes, v), (Q_u, v_u) = support, unlabelled
    as32 = ((Q.float(), codes, v), (Q_u.float(), v_u))
    blocked = _objective(*params, *as32, W0, 0.3, 0.7, block_rows=2, **terms)
    as64 = ((Q.float().double(), codes, v), (Q_u.float().double(), v_u))
    exact = _objective(*params, *as64, W0, 0.3, 0.7, **terms)
    for ours, reference in zip(blocked, exact):
        assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-12, atol=1e-14)
    leaves = [p.clone().requires_grad_(True) for p in params]
    reference = _reference_objective(
        leaves, support, unlabelled, W0, 0.3, 0.7, marginal_weight
    )
    reference.backward()
    assert_allclose(loss.item(), reference.item(), rtol=1e-12)
    for ours, leaf in zip(grads, leaves):
        assert_allclose(ours.numpy(), leaf.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_objective_keeps_a_zero_row_fixed():
    # A zero row of W (the prototype of a class whose support rows are all
    # zero) has no direction: its cosines are 0, its gradient is 0 (it was
    # that of the unit row divided by a clamped norm, 1e-12), and the other
    # gradients are those of the documented objective (autograd).
    params, support, unlabelled, W0 = _random_problem(seed=3)
    W, b, log_s = params
    W, W0 = W.clone(), W0.clone()
    W[1], W0[1] = 0.0, 0.0
    loss, grad_W, grad_b, grad_log_s = _objective(
        W, b, log_s, support, unlabelled, W0, 0.3, 0.7, marginal_weight=1.0
    )
    assert_array_equal(grad_W[1].numpy(), np.zeros(W.shape[1]))
    leaves = [p.clone().requires_grad_(True) for p in (W, b, log_s)]
    reference = _reference_objective(leaves, support, unlabelled, W0, 0.3, 0.7, 1.0)
    reference.backward()
    assert_allclose(loss.item(), reference.item(), rtol=1e-12)
    other = [0, 2]
    assert_allclose(grad_W[other].numpy(), leaves[0].grad[other].numpy(), rtol=1e-10)
    assert_allclose(grad_b.numpy(), leaves[1].grad.numpy(), rtol=1e-10, atol=1e-12)
    assert_allclose(grad_log_s.item(), leaves[2].grad.item(), rtol=1e-10)


def test_an_all_zero_class_does_not_stop_the_fine_tuning():
    # A ReLU backbone on blank images: class 2's features are all zero. Its
    # weight row stays zero (cosines 0: only its bias is tuned), the others
    # are fine-tuned to a stationary point; the huge gradient of that row
    # made L-BFGS-B stop at iteration 0, silently, with every class untuned.
    rng = np.random.RandomState(0)
    X_zero = rng.rand(9, 8)
    y = np.repeat([0, 1, 2], 3)
    X_zero[y == 2] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = FineTunedCosineClassifier().fit(X_zero, y)
    assert clf.n_iter_ > 0
    assert_array_equal(clf.coef_[2], np.zeros(8))
    assert np.abs(_l2_normalize(clf.coef_[:2]) - clf._coef_init[:2]).max() > 0.1
    Q = torch.as_tensor(_l2_normalize(X_zero))
    v = torch.full((9,), 1 / 9, dtype=torch.float64)
    _, grad_W, grad_b, _ = _objective(
        torch.as_tensor(clf.coef_),
        torch.as_tensor(clf.intercept_),
        torch.tensor(np.log(10.0), dtype=torch.float64),
        (Q, torch.as_tensor(y), v),
        None,
        torch.as_tensor(clf._coef_init),
        clf.alpha,
        0.0,
    )
    assert max(grad_W.abs().max().item(), grad_b.abs().max().item()) <= clf.tol
    # the blank class is predicted for blank queries (its bias is the largest)
    assert clf.predict(np.zeros((1, 8)))[0] == 2


@pytest.mark.parametrize("transductive", [False, True])
def test_an_abnormal_stop_warns(monkeypatch, transductive):
    # A gradient that points uphill: the line search finds no decrease, and
    # L-BFGS-B stops abnormally (status 2); that stop was silent.
    from skfewshot import finetune

    objective = finetune._objective

    def wrong(*args, **kwargs):
        loss, grad_W, grad_b, grad_log_s = objective(*args, **kwargs)
        return loss, -grad_W, -grad_b, -grad_log_s

    monkeypatch.setattr(finetune, "_objective", wrong)
    params = {"transductive": transductive, "entropy_weight": 0.5}
    with pytest.warns(ConvergenceWarning, match="stopped abnormally") as record:
        clf = FineTunedCosineClassifier(**params).fit(X, Y)
        if transductive:
            clf.predict(X_NEW)
    assert [w.filename for w in record] == [__file__] * (1 + transductive)
    assert clf.n_iter_ == 0
    assert_allclose(clf.coef_, clf._coef_init)


def test_objective_gradient_matches_finite_differences():
    # Independent of torch's autograd: central differences of the loss.
    params, support, unlabelled, W0 = _random_problem(seed=1)
    W, b, log_s = params
    n_w = W.numel()

    def loss_and_grad(x):
        x = torch.as_tensor(x)
        W_x, b_x = x[:n_w].view_as(W), x[n_w:-1]
        loss, *grads = _objective(
            W_x, b_x, x[-1], support, unlabelled, W0, 0.3, 0.7, marginal_weight=2.0
        )
        flat = torch.cat([grads[0].reshape(-1), grads[1], grads[2].reshape(1)])
        return loss.item(), flat.numpy()

    x0 = torch.cat([W.reshape(-1), b, log_s.reshape(1)]).numpy()
    _, grad = loss_and_grad(x0)
    step = 1e-6
    numeric = [
        (loss_and_grad(x0 + e)[0] - loss_and_grad(x0 - e)[0]) / (2 * step)
        for e in step * np.eye(len(x0))
    ]
    assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_marginal_weight_zero_is_the_conditional_entropy_objective():
    # marginal_weight=0 is the objective of earlier releases, exactly: the
    # marginal term is skipped, not added with weight 0.
    params, support, unlabelled, W0 = _random_problem(seed=2)
    default = _objective(*params, support, unlabelled, W0, 0.3, 0.7)
    zero = _objective(*params, support, unlabelled, W0, 0.3, 0.7, marginal_weight=0)
    for ours, reference in zip(default, zero):
        assert_array_equal(ours.numpy(), reference.numpy())
    # The marginal term adds -lambda * mu * H(p_bar) to the loss, nothing else.
    (Q_u, v_u), (W, b, log_s) = unlabelled, params
    p_u = softmax(
        np.exp(log_s.item()) * Q_u.numpy() @ _l2_normalize(W.numpy()).T + b.numpy(),
        axis=1,
    )
    p_bar = v_u.numpy() @ p_u
    marginal_entropy = -(p_bar * np.log(p_bar)).sum()
    mi = _objective(*params, support, unlabelled, W0, 0.3, 0.7, marginal_weight=0.5)
    assert_allclose(
        mi[0].item() - zero[0].item(), -0.7 * 0.5 * marginal_entropy, rtol=1e-10
    )


def test_max_iter_zero_is_the_cosine_prototype_classifier():
    ft = FineTunedCosineClassifier(max_iter=0, scale=7.0).fit(X, Y)
    proto = PrototypeClassifier(metric="cosine", scale=7.0).fit(X, Y)
    assert ft.n_iter_ == 0
    assert_allclose(ft.coef_, _l2_normalize(proto.prototypes_), rtol=1e-12, atol=1e-15)
    assert_array_equal(ft.intercept_, np.zeros(3))
    assert_allclose(
        ft.predict_proba(X_NEW), proto.predict_proba(X_NEW), rtol=1e-12, atol=1e-15
    )
    assert_array_equal(ft.predict(X_NEW), proto.predict(X_NEW))


def test_huge_alpha_keeps_the_prototypes():
    ft = FineTunedCosineClassifier(alpha=1e6).fit(X, Y)
    proto = PrototypeClassifier(metric="cosine").fit(X, Y)
    assert_allclose(ft.predict_proba(X_NEW), proto.predict_proba(X_NEW), atol=1e-4)


def test_fit_minimises_the_documented_objective():
    clf = FineTunedCosineClassifier(alpha=0.05).fit(X, Y)
    W0 = torch.as_tensor(_l2_normalize(PrototypeClassifier().fit(X, Y).prototypes_))
    Q = F.normalize(torch.as_tensor(X), dim=1)
    support = (Q, torch.as_tensor(Y), torch.full((len(Y),), 1.0 / len(Y)).double())

    def objective(W, b):
        loss, grad_W, grad_b, _ = _objective(
            torch.as_tensor(W),
            torch.as_tensor(b),
            torch.tensor(np.log(10.0)),
            support,
            None,
            W0,
            0.05,
            0.0,
        )
        return loss.item(), np.abs(grad_W.numpy()).max(), np.abs(grad_b.numpy()).max()

    loss_start, *_ = objective(W0.numpy(), np.zeros(3))
    loss_end, grad_W_max, grad_b_max = objective(clf.coef_, clf.intercept_)
    assert loss_end < loss_start
    assert 0 < clf.n_iter_ <= clf.max_iter
    assert max(grad_W_max, grad_b_max) < 1e-5  # a stationary point
    # Fitting the support set beats the prototypes on that support set.
    proto = PrototypeClassifier().fit(X, Y)
    assert clf.score(X, Y) >= proto.score(X, Y)


def test_iteration_limit_warns():
    with pytest.warns(ConvergenceWarning, match="stopped after max_iter=2") as record:
        clf = FineTunedCosineClassifier(max_iter=2).fit(X, Y)
    assert clf.n_iter_ == 2
    assert record[0].filename == __file__


def test_deterministic():
    first = FineTunedCosineClassifier().fit(X, Y)
    second = FineTunedCosineClassifier().fit(X, Y)
    assert first.n_iter_ == second.n_iter_
    assert_allclose(first.coef_, second.coef_, **SAME)
    assert_allclose(first.intercept_, second.intercept_, **SAME)


def test_random_state_is_not_a_parameter():
    # The fit draws no random numbers; the parameter was documented as unused.
    assert "random_state" not in FineTunedCosineClassifier().get_params()
    with pytest.raises(TypeError, match="random_state"):
        FineTunedCosineClassifier(random_state=0)


def test_integer_sample_weight_equals_repetition():
    # Equal objectives; the two fits agree up to the optimiser tolerance.
    weight = np.tile([0, 1, 2], 6)
    clf = FineTunedCosineClassifier(tol=1e-8, max_iter=500)
    weighted = clone(clf).fit(X, Y, sample_weight=weight)
    repeated = clone(clf).fit(np.repeat(X, weight, 0), np.repeat(Y, weight))
    assert_allclose(weighted.coef_, repeated.coef_, atol=1e-6)
    assert_allclose(weighted.intercept_, repeated.intercept_, atol=1e-6)
    assert_allclose(
        weighted.predict_proba(X_NEW), repeated.predict_proba(X_NEW), atol=1e-6
    )


def test_unlabelled_rows_only_enter_the_entropy_term():
    X_u = np.vstack([X, X_NEW])
    y_u = np.concatenate([Y, -np.ones(len(X_NEW), dtype=int)])
    plain = FineTunedCosineClassifier().fit(X, Y)
    ignored = FineTunedCosineClassifier(unlabelled_label=-1).fit(X_u, y_u)
    assert_array_equal(ignored.classes_, [0, 1, 2])
    assert_allclose(ignored.coef_, plain.coef_, **SAME)
    semi = FineTunedCosineClassifier(
        entropy_weight=1.0, marginal_weight=0.0, unlabelled_label=-1
    )
    used = semi.fit(X_u, y_u)
    assert not np.allclose(used.coef_, plain.coef_)
    # Entropy minimisation makes the unlabelled rows' predictions more confident.
    entropy = [
        -(p * np.log(p)).sum(axis=1).mean()
        for p in (plain.predict_proba(X_NEW), used.predict_proba(X_NEW))
    ]
    assert entropy[1] < entropy[0]


def test_transductive_leaves_the_fitted_state_alone():
    clf = FineTunedCosineClassifier(transductive=True, entropy_weight=1.0).fit(X, Y)
    coef, intercept = clf.coef_.copy(), clf.intercept_.copy()
    first = clf.predict_proba(X_NEW)
    other = clf.predict_proba(X)
    second = clf.predict_proba(X_NEW)
    assert_allclose(first, second, **SAME)
    assert_array_equal(clf.coef_, coef)
    assert_array_equal(clf.intercept_, intercept)
    fresh = FineTunedCosineClassifier(transductive=True, entropy_weight=1.0).fit(X, Y)
    assert_allclose(fresh.predict_proba(X), other, **SAME)
    # The queries moved the classifier: probabilities differ from inductive ones.
    inductive = FineTunedCosineClassifier(entropy_weight=1.0).fit(X, Y)
    assert not np.allclose(first, inductive.predict_proba(X_NEW))
    # All prediction methods see the same adapted classifier.
    assert_array_equal(clf.predict(X_NEW), clf.classes_[first.argmax(axis=1)])
    assert_allclose(clf.predict_log_proba(X_NEW), np.log(first), **SAME)
    assert_allclose(softmax(clf.decision_function(X_NEW), axis=1), first, **SAME)


def test_transductive_without_entropy_changes_nothing():
    inductive = FineTunedCosineClassifier().fit(X, Y)
    transductive = FineTunedCosineClassifier(transductive=True).fit(X, Y)
    assert_allclose(
        transductive.predict_proba(X_NEW), inductive.predict_proba(X_NEW), **SAME
    )


def _hard_episode(dim=256, noise=4.0, seed=2, n_way=5, n_shot=5, n_query=15):
    """Noisy non-negative class blobs in high dimension (post-ReLU-like).

    Every row is close to the common mean direction, so the cosines differ
    little between classes and one class's bias can win every query: the
    conditional entropy alone collapses here.
    """
    rng = np.random.RandomState(seed)
    centers = rng.normal(size=(n_way, dim))

    def draw(k):
        rows = [c + noise * rng.normal(size=(k, dim)) for c in centers]
        return np.maximum(np.concatenate(rows), 0), np.repeat(np.arange(n_way), k)

    return (*draw(n_shot), *draw(n_query))


# entropy_weight=1 lets the mutual information dominate: L-BFGS-B is still
# sharpening the (balanced, correct) clusters after max_iter iterations.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_conditional_entropy_alone_collapses_and_the_default_does_not():
    X_s, y_s, X_q, y_q = _hard_episode()
    inductive = FineTunedCosineClassifier().fit(X_s, y_s)
    inductive_accuracy = inductive.score(X_q, y_q)
    assert inductive_accuracy > 0.5
    old = FineTunedCosineClassifier(
        transductive=True, entropy_weight=0.1, marginal_weight=0.0
    ).fit(X_s, y_s)
    # Before the marginal term: (nearly) every query goes to one class.
    assert np.bincount(old.predict(X_q), minlength=5).max() >= 70
    assert old.score(X_q, y_q) <= 0.25
    for entropy_weight in [0.01, 0.1, 1.0]:
        new = FineTunedCosineClassifier(
            transductive=True, entropy_weight=entropy_weight
        ).fit(X_s, y_s)
        counts = np.bincount(new.predict(X_q), minlength=5)
        assert counts.max() <= 25, (entropy_weight, counts)  # 15 per class
        assert new.score(X_q, y_q) >= inductive_accuracy, entropy_weight


def test_transductive_is_deterministic():
    X_s, y_s, X_q, _ = _hard_episode(dim=32, noise=1.5)
    params = {"transductive": True, "entropy_weight": 0.5}
    first = FineTunedCosineClassifier(**params).fit(X_s, y_s).predict_proba(X_q)
    second = FineTunedCosineClassifier(**params).fit(X_s, y_s).predict_proba(X_q)
    assert_allclose(first, second, **SAME)


# An unregularised scale keeps growing on a support set the head separates
# (documented), so the iteration limit is expected to warn here.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_learn_scale_fits_the_scale():
    clf = FineTunedCosineClassifier(learn_scale=True, scale=2.0).fit(X, Y)
    assert clf.scale_ != 2.0
    assert FineTunedCosineClassifier(scale=2.0).fit(X, Y).scale_ == 2.0
    # Predictions use the learned scale.
    logits = clf.scale_ * _l2_normalize(X_NEW) @ _l2_normalize(clf.coef_).T
    assert_allclose(
        clf.decision_function(X_NEW), logits + clf.intercept_, rtol=1e-10, atol=1e-12
    )


def test_string_labels_and_pickle():
    labels = np.array(["cat", "dog", "emu"])[Y]
    clf = FineTunedCosineClassifier().fit(X, labels)
    assert_array_equal(clf.classes_, ["cat", "dog", "emu"])
    loaded = pickle.loads(pickle.dumps(clf))
    assert_array_equal(loaded.predict(X_NEW), clf.predict(X_NEW))
    assert_allclose(loaded.predict_proba(X_NEW), clf.predict_proba(X_NEW), **SAME)
    assert set(loaded.predict(X_NEW)) <= {"cat", "dog", "emu"}


def test_episode_is_classified_well(episode):
    X_support, y_support, X_query, y_query = episode
    clf = FineTunedCosineClassifier().fit(X_support, y_support)
    assert clf.score(X_query, y_query) >= 0.9
    assert isinstance(clf.coef_, np.ndarray) and clf.coef_.shape == (5, 16)


@pytest.mark.parametrize(
    "X_bad, y_bad, match",
    [
        (X, np.zeros(len(X)), "at least 2 classes"),
        (X, -np.ones(len(X)), "at least 2 classes.*got 1 class: -1"),
        (np.where(X > 1, np.nan, X), Y, "NaN"),
        (np.where(X > 1, np.inf, X), Y, "infinity"),
        (np.empty((0, 5)), [], "0 sample"),
        (X[:, 0], Y, "Expected 2D array"),
    ],
)
def test_bad_input_in_fit(X_bad, y_bad, match):
    with pytest.raises(ValueError, match=match):
        FineTunedCosineClassifier().fit(X_bad, y_bad)


def test_wrong_number_of_features_at_predict():
    clf = FineTunedCosineClassifier().fit(X, Y)
    with pytest.raises(ValueError, match="4 features, but FineTunedCosineClassifier"):
        clf.predict_proba(X[:, :4])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"scale": 0.0}, "'scale' parameter"),
        ({"max_iter": -1}, "'max_iter' parameter"),
        ({"alpha": -0.1}, "'alpha' parameter"),
        ({"entropy_weight": -1.0}, "'entropy_weight' parameter"),
        ({"marginal_weight": -1.0}, "'marginal_weight' parameter"),
        ({"device": "not-a-device"}, "not a valid torch device"),
        ({"scale": np.inf}, "'scale' parameter"),
        ({"unlabelled_label": 1.5}, "'unlabelled_label' parameter.*int.*str"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        FineTunedCosineClassifier(**params).fit(X, Y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        FineTunedCosineClassifier(device="cuda").fit(X, Y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    cpu = FineTunedCosineClassifier(device="cpu").fit(X, Y)
    cuda = FineTunedCosineClassifier(device="cuda").fit(X, Y)
    assert isinstance(cuda.coef_, np.ndarray)
    assert_allclose(cuda.predict_proba(X_NEW), cpu.predict_proba(X_NEW), atol=1e-6)


# -- label -1 is a class; unlabelled rows only when asked for -----------------


def test_binary_minus_one_plus_one_labels():
    y = np.where(Y[Y < 2] == 0, -1, 1)
    clf = FineTunedCosineClassifier().fit(X[Y < 2], y)
    assert_array_equal(clf.classes_, [-1, 1])
    assert clf.coef_.shape == (2, 5)
    assert set(clf.predict(X_NEW)) <= {-1, 1}
    assert clf.score(X[Y < 2], y) == 1.0


def test_labels_minus_one_to_three_equal_labels_zero_to_four(episode):
    # Same data, classes relabelled 0 -> -1, 1 -> 0, ..., 4 -> 3 (same order):
    # the same objective, so the same classifier.
    X_support, y_support, X_query, _ = episode
    relabel = np.array([-1, 0, 1, 2, 3])
    params = {"transductive": True, "entropy_weight": 0.1}
    shifted = FineTunedCosineClassifier(**params).fit(X_support, relabel[y_support])
    plain = FineTunedCosineClassifier(**params).fit(X_support, y_support)
    assert_array_equal(shifted.classes_, [-1, 0, 1, 2, 3])
    assert_allclose(shifted.coef_, plain.coef_, **SAME)
    assert_array_equal(shifted.predict(X_query), relabel[plain.predict(X_query)])
    assert_allclose(
        shifted.predict_proba(X_query), plain.predict_proba(X_query), **SAME
    )


def test_unlabelled_rows_are_a_class_unless_asked_for():
    X_u = np.vstack([X, X_NEW])
    y_u = np.concatenate([Y, -np.ones(len(X_NEW), dtype=int)])
    default = FineTunedCosineClassifier(entropy_weight=1.0).fit(X_u, y_u)
    assert_array_equal(default.classes_, [-1, 0, 1, 2])
    # A text unlabelled_label, with text labels.
    names = np.array(["?", "cat", "dog", "emu"])[y_u + 1]
    semi = FineTunedCosineClassifier(entropy_weight=1.0, unlabelled_label="?")
    semi.fit(X_u, names)
    numeric = FineTunedCosineClassifier(entropy_weight=1.0, unlabelled_label=-1)
    numeric.fit(X_u, y_u)
    assert_array_equal(semi.classes_, ["cat", "dog", "emu"])
    assert_allclose(semi.coef_, numeric.coef_, **SAME)


@pytest.mark.parametrize(
    "y, unlabelled_label, match",
    [
        (np.where(Y == 0, 0, -1), -1, "got 1 class: 0 \\(12 rows with y == -1 are"),
        (-np.ones(len(Y), dtype=int), -1, "All 18 labels are -1 \\(unlabelled_label"),
        (np.full(len(Y), "u"), "u", "All 18 labels are 'u' \\(unlabelled_label='u'"),
    ],
)
def test_too_few_labelled_rows(y, unlabelled_label, match):
    clf = FineTunedCosineClassifier(unlabelled_label=unlabelled_label)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)


# -- scale --------------------------------------------------------------------


# tol=1e-10 is at the rounding floor of the gradient: L-BFGS-B may stop there
# abnormally (its line search finds no decrease), which warns
@pytest.mark.filterwarnings(
    "ignore:FineTunedCosineClassifier stopped abnormally:"
    "sklearn.exceptions.ConvergenceWarning"
)
@pytest.mark.parametrize("transductive", [False, True])
def test_does_not_depend_on_the_feature_scale(transductive):
    # float32 features around 1e20: their squared norms overflow float32.
    # Converged tightly, so the two fits differ by the input rounding only.
    params = {"transductive": transductive, "entropy_weight": 0.5, "tol": 1e-10}
    X32, X_new32 = X.astype(np.float32), X_NEW.astype(np.float32)
    huge = FineTunedCosineClassifier(**params).fit(X32 * np.float32(1e20), Y)
    plain = FineTunedCosineClassifier(**params).fit(X32, Y)
    proba = plain.predict_proba(X_new32)
    assert proba.std() > 0.1  # not uniform
    # The normalised rows agree to float32 rounding; so do the fits.
    assert_allclose(huge.coef_, plain.coef_, rtol=1e-4, atol=1e-5)
    assert_allclose(
        huge.predict_proba(X_new32 * np.float32(1e20)), proba, rtol=1e-4, atol=1e-5
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "params",
    [
        {"scale": 1e300},
        {"scale": 1e300, "learn_scale": True},
        {"alpha": 1e300},
        {"entropy_weight": 1e300, "transductive": True},
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_parameters_give_finite_probabilities(params, dtype):
    clf = FineTunedCosineClassifier(**params).fit(X.astype(dtype), Y)
    proba = clf.predict_proba(X_NEW.astype(dtype))
    assert np.isfinite(proba).all()
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.isfinite(clf.coef_).all() and np.isfinite(clf.scale_)


def test_huge_alpha_is_the_prototype_classifier():
    clf = FineTunedCosineClassifier(alpha=1e300).fit(X, Y)
    proto = PrototypeClassifier().fit(X, Y)
    assert_allclose(clf.predict_proba(X_NEW), proto.predict_proba(X_NEW), atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_huge_sample_weight_equals_unweighted(dtype):
    X_d = X.astype(dtype)
    weighted = FineTunedCosineClassifier().fit(X_d, Y, sample_weight=np.full(18, 1e300))
    plain = FineTunedCosineClassifier().fit(X_d, Y)
    assert_allclose(weighted.coef_, plain.coef_, **SAME)
    assert_allclose(weighted.intercept_, plain.intercept_, **SAME)
    assert_allclose(weighted.predict_proba(X_NEW), plain.predict_proba(X_NEW), **SAME)


# -- memory -------------------------------------------------------------------

_PEAK_MEMORY_SCRIPT = """
import resource, sys, warnings
import numpy as np
from skfewshot import FineTunedCosineClassifier

warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
n, d = 100_000, 256
# Warm up (lazy imports, torch and BLAS buffers) on a small problem first.
small = rng.standard_normal((200, d), dtype=np.float32)
FineTunedCosineClassifier(max_iter=3, {params}).fit(small, np.arange(200) % 5)
X = rng.standard_normal((n, d), dtype=np.float32)
y = np.arange(n) % 5
if {unlabelled}:
    y[::10] = -1
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
FineTunedCosineClassifier(max_iter=3, {params}).fit(X, y)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes or KiB
print((after - before) * unit / X.nbytes)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB")
@pytest.mark.parametrize(
    "params, unlabelled",
    [
        ("device='cpu'", False),
        ("device='cpu', entropy_weight=1.0, unlabelled_label=-1", True),
    ],
)
def test_fit_peak_memory_is_within_twice_the_input(params, unlabelled):
    # torch allocations are invisible to tracemalloc: measure the peak
    # resident memory of a fresh process (100,000 x 256 float32: 100 MB).
    script = _PEAK_MEMORY_SCRIPT.format(params=params, unlabelled=unlabelled)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    ratio = float(done.stdout.strip().splitlines()[-1])
    assert ratio <= 2.0, ratio

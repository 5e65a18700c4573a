"""Tests for skfewshot._lbfgs: L-BFGS over a batch of independent problems."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize, rosen, rosen_der

from skfewshot._lbfgs import minimize_batched


def quadratics(curvatures, centres):
    """``f_i(x) = 1/2 sum_j c_ij (x_j - m_ij)^2``, one problem a row."""
    c = torch.as_tensor(curvatures, dtype=torch.float64)
    m = torch.as_tensor(centres, dtype=torch.float64)
    calls = []

    def fun(x, problems):
        calls.append(problems.tolist())
        d = x - m[problems]
        return 0.5 * (c[problems] * d.square()).sum(dim=1), c[problems] * d

    return fun, calls


def test_each_problem_reaches_its_own_minimum():
    rng = np.random.RandomState(0)
    curvatures = np.array([[1.0] * 5, [1.0, 10, 100, 1e3, 1e4], rng.uniform(1, 50, 5)])
    centres = rng.normal(size=(3, 5))
    fun, calls = quadratics(curvatures, centres)
    x, n_iter, status = minimize_batched(
        fun, torch.zeros(3, 5, dtype=torch.float64), max_iter=200, tol=1e-9
    )
    assert status.tolist() == [0] * 3
    # largest gradient entry <= tol: |x - m| <= tol / c entry by entry
    assert np.all(np.abs(x.numpy() - centres) <= 1e-9 / curvatures)
    # the round quadratic is solved by the first (unit-length, then exact) steps;
    # the ill-conditioned one needs more, and stops being evaluated once done
    assert n_iter[0] <= 2 < n_iter[1]
    assert all(0 not in call for call in calls[-1:]) and calls[0] == [0, 1, 2]


def test_a_problem_already_at_its_minimum_takes_no_step():
    fun, _ = quadratics([[1.0, 2.0], [1.0, 2.0]], [[0.0, 0.0], [1.0, 1.0]])
    x, n_iter, status = minimize_batched(
        fun, torch.zeros(2, 2, dtype=torch.float64), max_iter=50, tol=1e-8
    )
    assert n_iter[0] == 0 and status.tolist() == [0, 0]
    assert torch.equal(x[0], torch.zeros(2, dtype=torch.float64))


def test_rosenbrock_as_scipy_solves_it():
    # a non-convex valley: the batch finds the minimum scipy's L-BFGS-B finds,
    # in a comparable number of iterations, from each starting point
    starts = np.array([[-1.2, 1.0], [2.0, -1.0], [0.0, 0.0], [-0.5, 2.5]])

    def fun(x, problems):
        a, b = x[:, 0], x[:, 1]
        f = 100 * (b - a.square()).square() + (1 - a).square()
        g = torch.stack(
            [-400 * a * (b - a.square()) - 2 * (1 - a), 200 * (b - a.square())], 1
        )
        return f, g

    x, n_iter, status = minimize_batched(
        fun, torch.as_tensor(starts), max_iter=500, tol=1e-8
    )
    assert not status.any()
    np.testing.assert_allclose(x.numpy(), 1.0, atol=1e-7)
    for start, iterations in zip(starts, n_iter.tolist()):
        reference = minimize(
            rosen, start, jac=rosen_der, method="L-BFGS-B",
            options={"gtol": 1e-8, "ftol": 0.0, "maxiter": 500},
        )  # fmt: skip
        np.testing.assert_allclose(reference.x, 1.0, atol=1e-6)
        assert iterations <= 2 * reference.nit + 10


def test_max_iter_stops_unconverged_problems():
    fun, _ = quadratics([[1.0, 1e4]], [[3.0, -2.0]])
    x, n_iter, status = minimize_batched(
        fun, torch.zeros(1, 2, dtype=torch.float64), max_iter=1, tol=1e-12
    )
    assert n_iter.tolist() == [1] and status.tolist() == [1]
    x, n_iter, status = minimize_batched(
        fun, torch.zeros(1, 2, dtype=torch.float64), max_iter=0, tol=1e-12
    )
    assert n_iter.tolist() == [0] and torch.equal(x, torch.zeros(1, 2).double())


def test_the_line_search_backtracks_from_non_finite_values():
    # f = -log(1 - x^2) is +inf outside (-1, 1): the unit first step from
    # x = 0.9 overshoots, and the search must shrink back into the domain
    def fun(x, problems):
        inside = 1 - x.square()
        f = torch.where(inside > 0, -torch.log(inside.clamp_min(1e-300)), torch.inf)
        return f.sum(dim=1), 2 * x / inside

    x0 = torch.tensor([[0.9], [-0.99]], dtype=torch.float64)
    x, _, status = minimize_batched(fun, x0, max_iter=100, tol=1e-8)
    assert not status.any()
    np.testing.assert_allclose(x.numpy(), 0.0, atol=0.5e-8)


def test_the_gradient_test_can_be_measured_elsewhere():
    # the stopping measure is the caller's: here twice the largest entry
    fun, _ = quadratics([[1.0, 1.0]], [[1.0, 1.0]])
    seen = []

    def measure(g, problems):
        seen.append(g.shape)
        return 2 * g.abs().amax(dim=1)

    x, _, status = minimize_batched(
        fun, torch.zeros(1, 2, dtype=torch.float64), max_iter=50, tol=1e-9,
        grad_measure=measure,
    )  # fmt: skip
    assert status.tolist() == [0] and seen[0] == (1, 2)
    assert np.all(np.abs(x.numpy() - 1.0) <= 0.5e-9)


@pytest.mark.parametrize("history", [1, 3, 10])
def test_any_memory_size_converges(history):
    rng = np.random.RandomState(1)
    A = rng.normal(size=(6, 6))
    H = torch.as_tensor(A @ A.T + np.eye(6))

    def fun(x, problems):
        Hx = x @ H
        return 0.5 * (x * Hx).sum(dim=1) - x.sum(dim=1), Hx - 1

    x, _, status = minimize_batched(
        fun, torch.zeros(2, 6, dtype=torch.float64), max_iter=500, tol=1e-7,
        history=history,
    )  # fmt: skip
    assert not status.any()
    # |x - x*| <= |H^-1| |g| <= sqrt(6) tol / lambda_min(H), lambda_min >= 1
    expected = np.linalg.solve(H.numpy(), np.ones(6))
    np.testing.assert_allclose(x.numpy(), [expected, expected], rtol=0, atol=3e-7)


def test_a_failed_line_search_from_steepest_descent_is_an_abnormal_stop():
    # problem 0 reports the opposite of its gradient: no step along the
    # reported descent direction decreases f, so it stops at once with
    # status 2 (SciPy's ABNORMAL), not counted as an iteration, at x0; the
    # batch's other problem converges as usual (it stopped silently before)
    fun, _ = quadratics([[1.0, 2.0], [1.0, 2.0]], [[1.0, -1.0], [1.0, -1.0]])

    def wrong_first(x, problems):
        f, g = fun(x, problems)
        return f, torch.where((problems == 0)[:, None], -g, g)

    x0 = torch.zeros(2, 2, dtype=torch.float64)
    x, n_iter, status = minimize_batched(wrong_first, x0, max_iter=50, tol=1e-9)
    assert status.tolist() == [2, 0]
    assert n_iter[0] == 0 and n_iter[1] > 0
    assert torch.equal(x[0], x0[0])

    def wrong_numpy(z):
        f, g = wrong_first(torch.as_tensor(z)[None], torch.tensor([0]))
        return f.item(), g[0].numpy()

    reference = minimize(
        wrong_numpy, np.zeros(2), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-9, "ftol": 0.0},
    )  # fmt: skip
    assert reference.status == 2 and reference.nit == 0  # SciPy's word for it


def test_a_failed_quasi_newton_search_is_retried_from_steepest_descent():
    # every trial of the second iteration's line search (a quasi-Newton
    # direction) meets f = inf: as L-BFGS-B, drop the memory and retry from
    # -g, which succeeds; without the retry the problem stopped with status 2
    fun, calls = quadratics([[1.0, 10.0]], [[30.0, -40.0]])
    n_calls = []

    def blocked(x, problems):
        f, g = fun(x, problems)
        n_calls.append(None)
        if 3 <= len(n_calls) <= 22:  # the 20 trials after iteration 1
            f = torch.full_like(f, torch.inf)
        return f, g

    x, n_iter, status = minimize_batched(
        blocked, torch.zeros(1, 2, dtype=torch.float64), max_iter=100, tol=1e-9
    )
    assert status.tolist() == [0]
    assert np.all(np.abs(x.numpy() - [[30.0, -40.0]]) <= 1e-9 / np.array([1, 10]))

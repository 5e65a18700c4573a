"""L-BFGS over a batch of independent problems, as one torch computation.

:func:`minimize_batched` minimises ``B`` smooth functions of ``n`` variables
each (``B`` few-shot episodes of one head, for :mod:`skfewshot._batched`) with
the iteration of SciPy's L-BFGS-B without bounds, which the per-episode path
of :class:`~skfewshot.FineTunedCosineClassifier` runs: a memory of
``history`` correction pairs, the two-loop recursion for the direction, a line
search that ensures sufficient decrease, and the same stopping rules
(largest absolute gradient entry at most ``tol``, an iteration limit, a
step that no longer decreases the function, or a line search that fails
even from the steepest descent direction). Each problem keeps its own
memory, step lengths and stopping state; the problems still running are
evaluated together in one call of the objective.

Private module; torch is imported by the caller.
"""

from __future__ import annotations

import torch

__all__ = ["minimize_batched"]

#: Sufficient-decrease constant of the line search (L-BFGS-B's ``ftol``).
_ARMIJO = 1e-3

#: Most function evaluations of one line search (L-BFGS-B's limit).
_MAX_LINE_SEARCH = 20


def minimize_batched(fun, x0, *, max_iter, tol, grad_measure=None, history=10):
    """Minimise ``B`` independent functions from the rows of ``x0``.

    Parameters
    ----------
    fun : callable
        ``fun(x, problems) -> (f, g)``: for the rows ``x`` (m, n) of the
        problems with indices ``problems`` (a long tensor of m indices into
        the batch), the values ``f`` (m,) and gradients ``g`` (m, n).
    x0 : tensor of shape (B, n)
        Starting points.
    max_iter : int
        Most iterations per problem (each a direction and a line search).
    tol : float
        A problem stops when ``grad_measure`` of its gradient is at most
        ``tol``.
    grad_measure : callable or None, default=None
        ``grad_measure(g, problems) -> (m,)``; None: the largest absolute
        entry of ``g`` (L-BFGS-B's projected gradient test without bounds).
    history : int, default=10
        Correction pairs kept per problem (L-BFGS-B's default ``maxcor``).

    Returns
    -------
    x : tensor of shape (B, n)
        The last point of each problem.
    n_iter : tensor of shape (B,)
        Iterations run per problem.
    status : tensor of shape (B,)
        Why each problem stopped, as SciPy's L-BFGS-B ``status`` says it: 0
        when it converged (the gradient test, or, as with ``ftol=0``, an
        accepted step that no longer decreased its function), 1 when it ran
        out of its ``max_iter`` iterations, 2 for an abnormal stop (the line
        search found no sufficient decrease from the steepest descent
        direction; after a failure from a quasi-Newton direction the memory
        is dropped and the iteration retried from there, as L-BFGS-B does).
    """
    if grad_measure is None:

        def grad_measure(g, problems):
            return g.abs().amax(dim=-1)

    n_problems = x0.shape[0]
    every = torch.arange(n_problems, device=x0.device)
    x = x0.clone()
    f, g = fun(x, every)
    status = torch.where(grad_measure(g, every) <= tol, 0, 1)
    running = status == 1
    n_iter = torch.zeros(n_problems, dtype=torch.long, device=x0.device)
    memory = _Memory(history, x)
    while max_iter > 0 and bool(running.any()):
        problems = running.nonzero().squeeze(1)
        x_p, f_p, g_p = x[problems], f[problems], g[problems]
        direction = -memory.apply(g_p, problems)
        slope = (g_p * direction).sum(dim=-1)
        # No descent (a memory spoilt by rounding): restart from -g.
        uphill = ~(slope < 0)
        if bool(uphill.any()):
            memory.forget(problems[uphill])
            direction[uphill] = -g_p[uphill]
            slope = torch.where(uphill, -(g_p * g_p).sum(dim=-1), slope)
        # A first step of unit length (L-BFGS-B's 1 / |d| when the memory is
        # empty), then the unit step of the quasi-Newton direction.
        steepest = memory.empty(problems)  # no retry if this search fails
        step = torch.where(
            steepest,
            torch.linalg.vector_norm(direction, dim=-1).reciprocal().clamp(max=1.0),
            torch.ones_like(f_p),
        )
        x_new, f_new, g_new, found = _line_search(
            fun, problems, x_p, f_p, g_p, direction, slope, step
        )
        memory.update(problems, x_new - x_p, g_new - g_p)
        x[problems], f[problems], g[problems] = x_new, f_new, g_new
        # A failed search is not an iteration; from a quasi-Newton direction,
        # L-BFGS-B drops the memory and retries from the steepest descent.
        memory.forget(problems[~found & ~steepest])
        n_iter[problems] += found.long()
        done = found & (grad_measure(g_new, problems) <= tol)
        # L-BFGS-B with ftol=0 converges once a step no longer decreases f.
        done |= found & ~(f_new < f_p)
        abnormal = ~found & steepest
        status[problems] = torch.where(done, 0, torch.where(abnormal, 2, 1))
        out = n_iter[problems] >= max_iter
        running[problems] = ~(done | abnormal | out)
    return x, n_iter, status


def _line_search(fun, problems, x, f, g, direction, slope, step):
    """Backtracking to sufficient decrease, each problem with its own step.

    A rejected step is replaced by the minimiser of the quadratic through
    ``f``, ``slope`` and the rejected value, kept within [0.1, 0.5] times the
    rejected step. Returns the new points, values and gradients (the old
    ones where no step was found) and which problems found one.
    """
    x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
    pending = torch.ones_like(f, dtype=torch.bool)
    found = torch.zeros_like(pending)
    for _ in range(_MAX_LINE_SEARCH):
        rows = pending.nonzero().squeeze(1)
        t = step[rows]
        x_t = x[rows] + t[:, None] * direction[rows]
        f_t, g_t = fun(x_t, problems[rows])
        ok = torch.isfinite(f_t) & (f_t <= f[rows] + _ARMIJO * t * slope[rows])
        ok &= torch.isfinite(g_t).all(dim=-1)
        accepted = rows[ok]
        x_new[accepted], f_new[accepted], g_new[accepted] = x_t[ok], f_t[ok], g_t[ok]
        found[accepted] = True
        pending[accepted] = False
        if not bool(pending.any()):
            break
        rejected, t_bad, f_bad = rows[~ok], t[~ok], f_t[~ok]
        curvature = f_bad - f[rejected] - slope[rejected] * t_bad
        quadratic = -slope[rejected] * t_bad.square() / (2 * curvature)
        quadratic = torch.where(torch.isfinite(quadratic), quadratic, 0.5 * t_bad)
        step[rejected] = torch.minimum(
            torch.maximum(quadratic, 0.1 * t_bad), 0.5 * t_bad
        )
    return x_new, f_new, g_new, found


class _Memory:
    """The correction pairs ``(s, y)`` of every problem, in one ring buffer.

    Every iteration writes one slot for all the problems running (the other
    problems have stopped for good); a pair whose curvature ``s . y`` is not
    safely positive is stored with ``rho = 0``, which makes it a no-op of the
    two-loop recursion (L-BFGS-B skips such pairs too).
    """

    def __init__(self, size, x):
        n_problems, n = x.shape
        self.s = x.new_zeros((size, n_problems, n))
        self.y = x.new_zeros((size, n_problems, n))
        self.rho = x.new_zeros((size, n_problems))
        self.gamma = x.new_ones(n_problems)  # H0 = gamma I
        self.count = 0  # slots written so far

    def empty(self, problems):
        return ~(self.rho[:, problems] > 0).any(dim=0)

    def forget(self, problems):
        self.rho[:, problems] = 0
        self.gamma[problems] = 1

    def update(self, problems, s, y):
        slot = self.count % self.s.shape[0]
        self.count += 1
        sy, yy = (s * y).sum(dim=-1), (y * y).sum(dim=-1)
        good = sy > torch.finfo(s.dtype).eps * yy
        self.s[slot, problems], self.y[slot, problems] = s, y
        self.rho[slot, problems] = torch.where(good, 1 / torch.where(good, sy, 1), 0)
        self.gamma[problems] = torch.where(
            good, sy / torch.where(good, yy, 1), self.gamma[problems]
        )

    def apply(self, g, problems):
        """``H g``: the two-loop recursion, newest pair first."""
        size = self.s.shape[0]
        slots = [(self.count - 1 - i) % size for i in range(min(self.count, size))]
        s = self.s[:, problems]
        y = self.y[:, problems]
        rho = self.rho[:, problems]
        q = g.clone()
        alphas = []
        for slot in slots:
            a = rho[slot] * (s[slot] * q).sum(dim=-1)
            q -= a[:, None] * y[slot]
            alphas.append(a)
        r = self.gamma[problems, None] * q
        for slot, a in zip(reversed(slots), reversed(alphas)):
            beta = rho[slot] * (y[slot] * r).sum(dim=-1)
            r += (a - beta)[:, None] * s[slot]
        return r

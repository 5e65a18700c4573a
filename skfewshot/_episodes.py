"""One episode sampler for every caller: the CV splitter, the evaluation and the
episodic meta-trainer all draw N-way K-shot episodes through ``EpisodeSampler``.

Private module (numpy only, no torch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["EpisodeSampler"]


class EpisodeSampler:
    """Draw disjoint support/query index sets of N-way K-shot episodes from labels.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Class labels of the pool episodes are drawn from.
    n_way, n_shot, n_query : int
        Classes per episode, support and query samples per class.
    groups : array-like of shape (n_samples,), default=None
        Group of each sample (e.g. the Omniglot alphabet). Used with
        ``within_groups=True``: all classes of one episode come from one group.
    within_groups : bool, default=False
        Draw every episode's classes from a single group, chosen uniformly among
        the groups that have at least ``n_way`` eligible classes.

    Attributes
    ----------
    eligible_classes_ : ndarray
        Classes with at least ``n_shot + n_query`` samples.

    Raises
    ------
    ValueError
        When fewer than ``n_way`` classes (in any group, with ``within_groups``)
        have ``n_shot + n_query`` samples; the message says how many do.
    """

    def __init__(self, y, n_way, n_shot, n_query, *, groups=None, within_groups=False):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, got an array of shape {y.shape}.")
        for name, value, low in (
            ("n_way", n_way, 1),
            ("n_shot", n_shot, 1),
            ("n_query", n_query, 0),
        ):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        self.n_way, self.n_shot, self.n_query = int(n_way), int(n_shot), int(n_query)
        need = self.n_shot + self.n_query
        classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
        order = np.argsort(y_idx, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._members = {
            c: order[s : s + n] for c, s, n in zip(range(len(classes)), starts, counts)
        }
        eligible = np.flatnonzero(counts >= need)
        self.eligible_classes_ = classes[eligible]
        if within_groups:
            if groups is None:
                raise ValueError("within_groups=True needs groups (one per sample).")
            groups = np.asarray(groups)
            if groups.shape != y.shape:
                raise ValueError(
                    f"groups has shape {groups.shape} but y has shape {y.shape}."
                )
            # group of each class: every class must sit in exactly one group
            pools = {}
            for c in eligible:
                g = np.unique(groups[self._members[c]])
                if len(g) != 1:
                    raise ValueError(
                        f"class {classes[c]!r} spans several groups {g.tolist()}; "
                        "within-group episodes need each class in one group."
                    )
                pools.setdefault(g[0], []).append(c)
            self._pools = [
                np.array(v) for _, v in sorted(pools.items()) if len(v) >= self.n_way
            ]
            if not self._pools:
                best = max((len(v) for v in pools.values()), default=0)
                raise ValueError(
                    f"n_way={self.n_way} within one group was asked, but no group "
                    f"has that many classes with at least n_shot + n_query = {need} "
                    "samples "
                    f"(the largest group has {best})."
                )
        else:
            if len(eligible) < self.n_way:
                raise ValueError(
                    f"n_way={self.n_way} classes with at least n_shot + n_query = "
                    f"{need} samples each were asked, but only {len(eligible)} of "
                    f"{len(classes)} classes have that many."
                )
            self._pools = [eligible]

    def sample(self, rng):
        """Draw one episode.

        Parameters
        ----------
        rng : numpy.random.RandomState
            Source of randomness (use ``sklearn.utils.check_random_state``).

        Returns
        -------
        support_idx : ndarray of shape (n_way * n_shot,)
            Indices into ``y``, class-major (the shots of class 1, then class 2...).
        query_idx : ndarray of shape (n_way * n_query,)
            Indices into ``y``, class-major, disjoint from ``support_idx``.
        """
        pool = (
            self._pools[rng.randint(len(self._pools))]
            if len(self._pools) > 1
            else self._pools[0]
        )
        chosen = rng.choice(pool, size=self.n_way, replace=False)
        support, query = [], []
        for c in chosen:
            picks = rng.choice(
                self._members[c], size=self.n_shot + self.n_query, replace=False
            )
            support.append(picks[: self.n_shot])
            query.append(picks[self.n_shot :])
        return np.concatenate(support), np.concatenate(query)

    def episodes(self, rng, n_episodes):
        """Draw ``n_episodes`` episodes lazily, one per iteration.

        Each episode is drawn only when the caller asks for the next one, so
        memory does not grow with ``n_episodes``; the episodes are those of
        ``n_episodes`` successive calls to :meth:`sample` with ``rng``.

        Parameters
        ----------
        rng : numpy.random.RandomState
            Source of randomness, advanced by each episode drawn.
        n_episodes : int
            Number of episodes.

        Yields
        ------
        support_idx, query_idx : ndarray
            One episode, as returned by :meth:`sample`.
        """
        for _ in range(n_episodes):
            yield self.sample(rng)

"""The fixed Banking77 few-shot protocol that the text benchmarks share.

Only the training file of Banking77 (10,003 texts, 77 intents) is assumed, so
the test texts are a fixed, stratified part of it that no support set can
contain:

* :func:`split`: 20% of the rows, stratified by intent, are the held-out test
  part (``train_test_split(..., test_size=0.2, stratify=y, random_state=0)``);
  the other 80% are the *pool*;
* :func:`support_draws`: K texts per intent, every intent, drawn from the
  pool only; draw ``d`` orders each intent's pool rows by a permutation seeded
  with ``(seed, d)`` and keeps the first K, so the K=1 support of a draw is
  part of its K=5 support, and so on (the shots of one draw are nested);
* :func:`base_novel`: a fixed disjoint split of the 77 intent ids (indices
  into ``load_banking77(...).target_names``, i.e. ``categories.json`` order)
  into 50 base and 27 novel intents, for encoders trained on base intents
  only: ``np.random.default_rng(0).permutation(77)``, the first 27 are novel.

``python -m pytest --doctest-modules benchmarks/_banking77_protocol.py`` runs
the examples below (``benchmarks/`` is not collected by the test suite).
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

TEST_SIZE = 0.2
SPLIT_SEED = 0
N_INTENTS = 77


def split(y):
    """Split the rows into the support pool and the held-out test part.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        The intent of every row of the Banking77 training file.

    Returns
    -------
    pool_idx : ndarray of int
        Sorted row indices (80%) that support sets are drawn from.
    test_idx : ndarray of int
        Sorted row indices (20%, stratified by intent, ``random_state=0``)
        that every head is scored on; disjoint from ``pool_idx``.

    Examples
    --------
    >>> y = np.repeat(np.arange(3), 10)
    >>> pool, test = split(y)
    >>> len(pool), len(test), np.bincount(y[test]).tolist()
    (24, 6, [2, 2, 2])
    >>> set(pool) & set(test), np.array_equal(split(y)[1], test)
    (set(), True)
    """
    y = np.asarray(y)
    pool_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return np.sort(pool_idx), np.sort(test_idx)


def support_draws(y, pool_idx, k, n_draws=10, seed=0):
    """Draw ``n_draws`` support sets of ``k`` pool rows per intent.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        The intent of every row.
    pool_idx : array-like of int
        The rows a support set may contain (``split(y)[0]``).
    k : int
        Shots: rows per intent, for every intent present in ``y[pool_idx]``.
    n_draws : int, default=10
        How many support sets.
    seed : int, default=0
        Draw ``d`` orders each intent's pool rows (ascending row index) by
        ``np.random.default_rng((seed, d)).permutation`` and keeps the first
        ``k``; the same ``(seed, d)`` gives nested supports across ``k``.

    Returns
    -------
    draws : list of ndarray of int
        ``n_draws`` sorted arrays of ``k * n_intents`` row indices.

    Raises
    ------
    ValueError
        When an intent has fewer than ``k`` pool rows (named in the message).

    Examples
    --------
    >>> y = np.repeat(np.arange(3), 10)
    >>> pool, _ = split(y)
    >>> one, five = support_draws(y, pool, 1, 2), support_draws(y, pool, 5, 2)
    >>> [np.bincount(y[s]).tolist() for s in five]
    [[5, 5, 5], [5, 5, 5]]
    >>> set(five[0]) <= set(pool), set(one[0]) <= set(five[0])
    (True, True)
    >>> support_draws(y, pool, 9)
    Traceback (most recent call last):
    ...
    ValueError: k=9 shots but intent 0 has only 8 rows in the pool.
    """
    y = np.asarray(y)
    pool_idx = np.sort(np.asarray(pool_idx))
    by_intent = [pool_idx[y[pool_idx] == c] for c in np.unique(y[pool_idx])]
    for c, rows in zip(np.unique(y[pool_idx]), by_intent):
        if len(rows) < k:
            raise ValueError(
                f"k={k} shots but intent {c} has only {len(rows)} rows in the pool."
            )
    draws = []
    for d in range(n_draws):
        rng = np.random.default_rng((seed, d))
        picked = [rows[rng.permutation(len(rows))[:k]] for rows in by_intent]
        draws.append(np.sort(np.concatenate(picked)))
    return draws


def base_novel(n_novel=27, seed=0, n_intents=N_INTENTS):
    """Split the intent ids into disjoint base and novel intents.

    Parameters
    ----------
    n_novel : int, default=27
        How many novel intents (the rest are base intents).
    seed : int, default=0
        ``np.random.default_rng(seed).permutation(n_intents)``; its first
        ``n_novel`` entries are the novel intents.
    n_intents : int, default=77
        Intent ids are ``0 .. n_intents - 1`` (``load_banking77`` targets).

    Returns
    -------
    base_intents, novel_intents : ndarray of int
        Sorted, disjoint, together all intent ids.

    Examples
    --------
    >>> base, novel = base_novel()
    >>> len(base), len(novel), len(set(base) | set(novel)), set(base) & set(novel)
    (50, 27, 77, set())
    >>> novel[:5].tolist()
    [2, 4, 5, 8, 10]
    """
    perm = np.random.default_rng(seed).permutation(n_intents)
    return np.sort(perm[n_novel:]), np.sort(perm[:n_novel])


def describe():
    """The protocol in one line, for the caption of a table.

    Examples
    --------
    >>> describe()[:42]
    'Banking77 train.csv: 20% stratified held-o'
    """
    return (
        "Banking77 train.csv: 20% stratified held-out test part "
        "(train_test_split stratify=y, random_state=0); support draws of K texts "
        "per intent from the other 80% (draw d seeded (0, d), nested across K); "
        "base/novel intents: default_rng(0).permutation(77), first 27 novel."
    )

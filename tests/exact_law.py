"""Exact laws and goodness-of-fit helpers shared by the statistical tests.

Thresholds: a chi-square p-value must exceed `P_MIN` (a correct sampler fails
one such test with probability `P_MIN`; seeds are fixed, so runs reproduce);
sample moments must lie within `Z` standard errors (two-sided normal tail
5.7e-7 for Z = 5).
"""

import heapq
import itertools

import numpy as np
from scipy import stats

P_MIN = 1e-4
Z = 5.0
Q3 = np.array([0.2, 0.3, 0.5])


def outcomes(n, k):
    """Every x in N^k with sum(x) <= n, as an int array [m, k]."""
    grid = np.array(list(itertools.product(range(n + 1), repeat=k)))
    return grid[grid.sum(axis=1) <= n]


def zim_pmf(x, n, r, q):
    """Exact P(x) = Multinomial(n, [1 - r, r q]).pmf([n - sum(x), x]), q normalised, SciPy."""
    q = np.asarray(q, np.float64) / np.sum(q)
    full = np.concatenate([n - x.sum(axis=-1, keepdims=True), x], axis=-1)
    return stats.multinomial(n, np.concatenate([[1.0 - r], r * q])).pmf(full)


def joint_counts(draws, n):
    """Observed count of every outcome of `outcomes(n, k)`, in that order.

    Asserts that every draw lies in that support (sum(x) <= n, x >= 0).
    """
    draws = np.asarray(draws).astype(np.int64)
    assert draws.min() >= 0 and draws.max() <= n, "a draw left the support"
    k = draws.shape[1]
    radix = (n + 1) ** np.arange(k)
    table = np.bincount(draws @ radix, minlength=(n + 1) ** k)
    observed = table[outcomes(n, k) @ radix]
    assert observed.sum() == len(draws), "a draw left the support"
    return observed


def pool(table, key, minimum=5.0):
    """Merges the columns of `table` with smallest `key` until each key is >= `minimum`."""
    heap = [(e, i, table[:, i]) for i, e in enumerate(key)]
    heapq.heapify(heap)
    while len(heap) > 1 and heap[0][0] < minimum:
        e0, i0, c0 = heapq.heappop(heap)
        e1, _, c1 = heapq.heappop(heap)
        heapq.heappush(heap, (e0 + e1, i0, c0 + c1))
    return np.stack([c for _, _, c in heap], axis=1)


def chisquare_pvalue(observed, probs):
    """Pearson goodness of fit of counts `observed` to cell probabilities `probs`.

    Cells of expected count < 5 are pooled.
    """
    observed = np.asarray(observed, np.float64).ravel()
    probs = np.asarray(probs, np.float64).ravel()
    assert observed[probs == 0].sum() == 0, "drew an outcome of probability zero"
    keep = probs > 0
    expected = observed.sum() * probs[keep] / probs[keep].sum()
    table = pool(np.stack([observed[keep], expected]), expected)
    assert table.shape[1] >= 2, "too few cells for a chi-square test"
    return stats.chisquare(table[0], table[1]).pvalue


def two_sample_pvalue(first, second):
    """Chi-square test that two count vectors over the same cells share a law.

    Columns are pooled until each holds >= 10 draws in all, so that with the
    two samples of equal size every expected cell count is >= 5.
    """
    table = np.stack([first, second]).astype(np.float64)
    table = pool(table, table.sum(axis=0), 10.0)
    assert table.shape[1] >= 2
    return stats.chi2_contingency(table).pvalue


def binomial_interval(n, p, alpha=P_MIN):
    """[lo, hi] with P(Binomial(n, p) outside) < alpha."""
    return stats.binom.ppf(alpha / 2, n, p), stats.binom.isf(alpha / 2, n, p)

"""Tests of `keras_zim.sampling`: the exact XLA sampler against the ZIM facts.

Statistical tests draw many independent rows in one call (rows are i.i.d.
draws), with fixed seeds, and compare with exact laws from SciPy:

- Pearson chi-square goodness of fit, cells of expected count < 5 pooled, must
  have a p-value above `P_MIN = 1e-4` (a correct sampler fails one such test
  with probability 1e-4; the seeds are fixed, so a run is reproducible).
- Counts with a binomial law must lie in the central interval holding all but
  `P_MIN` of its mass (`binomial_interval`).
- Sample moments must lie within `Z = 5` standard errors of the analytic ones;
  the standard errors come from the exact pmf (two-sided normal tail 5.7e-7).

Each distinct (weights shape and dtype, chunk, smoothing) compiles once, so the
tests share them.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from exact_law import P_MIN, Q3, Z, binomial_interval, chisquare_pvalue, joint_counts, outcomes, zim_pmf
from keras_zim import sampling

ROWS = 20_000


def draw(weights, total_count, rate, seed, chunk=None, dtype=np.float64, **kwargs):
    """`sample_counts` on NumPy arguments, as a NumPy array."""
    weights = np.asarray(weights, dtype)
    return sampling.sample_counts(weights, total_count, rate, tf.constant(seed), chunk, **kwargs).numpy()


# ---------------------------------------------------------------- exact joint law


# Two parameter sets drawn in one call (rows 0..h-1 and h..2h-1), so per-row
# weights, trials and rates are exercised; the second has a zero-weight category.
HALF = ROWS // 2
CASES = [
    (4, 0.6, np.array([2.0, 3.0, 5.0])),  # unnormalised weights
    (3, 0.25, np.array([1.0, 0.0, 4.0])),
]


@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_joint_pmf_goodness_of_fit(chunk):
    # chunk=None is the default (4 here: one iteration almost always); tiny
    # chunks force many iterations of both XLA while loops (the fallback path).
    weights = np.repeat([w for _, _, w in CASES], HALF, axis=0)
    total = np.repeat([n for n, _, _ in CASES], HALF)
    rate = np.repeat([r for _, r, _ in CASES], HALF)
    counts = draw(weights, total, rate, [11, chunk or 0], chunk)
    for half, (n, r, w) in enumerate(CASES):
        rows = counts[half * HALF : (half + 1) * HALF]
        observed = joint_counts(rows, n)  # asserts every row is in the support sum(x) <= n
        assert chisquare_pvalue(observed, zim_pmf(outcomes(n, 3), n, r, w)) > P_MIN


# --------------------------------------------------- marginals, total, moments

N10, R10 = 10, 0.3


@pytest.fixture(scope="module")
def draws_n10():
    # chunk=4 < n: the passing-trial loop usually needs several iterations.
    return draw(np.tile(Q3, (ROWS, 1)), N10, R10, [5, 6], chunk=4)


def test_marginals_are_binomial(draws_n10):
    values = np.arange(N10 + 1)
    for i, q in enumerate(Q3):
        observed = np.bincount(draws_n10[:, i], minlength=N10 + 1)
        assert chisquare_pvalue(observed, stats.binom.pmf(values, N10, R10 * q)) > P_MIN


def test_total_is_binomial_n_r(draws_n10):
    observed = np.bincount(draws_n10.sum(axis=1), minlength=N10 + 1)
    assert observed.size == N10 + 1
    assert chisquare_pvalue(observed, stats.binom.pmf(np.arange(N10 + 1), N10, R10)) > P_MIN


def test_given_total_counts_are_multinomial(draws_n10):
    totals = draws_n10.sum(axis=1)
    tested = 0
    for size in range(1, N10 + 1):
        rows = draws_n10[totals == size]
        if len(rows) < 1000:
            continue
        grid = outcomes(size, 3)
        grid = grid[grid.sum(axis=1) == size]
        radix = (size + 1) ** np.arange(3)
        table = np.bincount(rows @ radix, minlength=(size + 1) ** 3)[grid @ radix]
        assert table.sum() == len(rows)
        assert chisquare_pvalue(table, stats.multinomial(size, Q3).pmf(grid)) > P_MIN
        tested += 1
    assert tested >= 4  # N = 1..5 each hold >= 1000 of the 20,000 rows


def exact_standard_errors(n, r, q, draws):
    """CLT standard errors of sample mean, variance, covariance and E||x||^2.

    From the exact pmf: SE(mean_i) = sqrt(Var x_i / m),
    SE(var_i) = sqrt((E[d_i^4] - Var_i^2) / m), SE(cov_ij) =
    sqrt((E[d_i^2 d_j^2] - Cov_ij^2) / m) with d = x - E[x], and
    SE(mean ||x||^2) = sqrt(Var ||x||^2 / m), for m draws.
    """
    x = outcomes(n, len(q))
    p = zim_pmf(x, n, r, q)
    m = len(draws)
    d = x - p @ x
    cov = np.einsum("o,oi,oj->ij", p, d, d)
    fourth = np.einsum("o,oi,oj->ij", p, d**2, d**2)
    square = (x**2).sum(axis=1)
    square_var = p @ square**2 - (p @ square) ** 2
    return (
        np.sqrt(np.diag(cov) / m),
        np.sqrt((fourth - cov**2) / m),
        np.sqrt(square_var / m),
    )


def test_moments_match_the_formulas(draws_n10):
    n, r, q = N10, R10, Q3
    mean = n * r * q
    cov = -n * r**2 * np.outer(q, q)
    np.fill_diagonal(cov, n * r * q * (1 - r * q))
    second = n * r + n * (n - 1) * r**2 * np.sum(q**2)
    se_mean, se_cov, se_second = exact_standard_errors(n, r, q, draws_n10)
    x = draws_n10.astype(np.float64)
    assert np.all(np.abs(x.mean(axis=0) - mean) < Z * se_mean)
    assert np.all(np.abs(np.cov(x, rowvar=False) - cov) < Z * se_cov)
    assert abs((x**2).sum(axis=1).mean() - second) < Z * se_second


# ------------------------------------------------------------ edge cases, exact


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_rate_zero_draws_nothing(chunk):
    counts = draw(np.tile(Q3, (ROWS, 1)), 4, 0.0, [1, 2], chunk)
    assert not counts.any()


@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_rate_one_places_every_trial(chunk):
    total = np.arange(ROWS) % 5  # n = 0..4, per row
    counts = draw(np.tile(Q3, (ROWS, 1)), total, 1.0, [3, 4], chunk)
    np.testing.assert_array_equal(counts.sum(axis=1), total)
    rows = counts[total == 4]  # given r = 1 these are Multinomial(4, q)
    observed = joint_counts(rows, 4)
    assert chisquare_pvalue(observed, zim_pmf(outcomes(4, 3), 4, 1.0, Q3)) > P_MIN


def test_one_category_gets_every_passing_trial():
    counts = draw(np.full((ROWS, 1), 2.5), 4, 0.6, [6, 7], chunk=4)[:, 0]
    observed = np.bincount(counts, minlength=5)
    assert observed.size == 5
    assert chisquare_pvalue(observed, stats.binom.pmf(np.arange(5), 4, 0.6)) > P_MIN


def test_rows_of_zero_weights_get_zero_counts():
    weights = np.tile(Q3, (ROWS, 1))
    weights[::3] = 0.0
    counts = draw(weights, 4, 1.0, [8, 9], chunk=3)
    assert not counts[::3].any()
    live = np.ones(ROWS, bool)
    live[::3] = False
    np.testing.assert_array_equal(counts[live].sum(axis=1), 4)


def test_output_is_int32_with_the_weights_shape():
    counts = sampling.sample_counts(tf.ones([ROWS, 3], tf.float64), 4, 0.5, [0, 0], chunk=4)
    assert counts.dtype == tf.int32
    assert counts.shape == (ROWS, 3)


def test_rows_with_nan_or_inf_get_zero_counts():
    weights = np.tile(Q3, (ROWS, 1))
    weights[::4, 1] = np.nan
    weights[1::4, 2] = np.inf
    counts = draw(weights, 4, 1.0, [8, 10], chunk=3)
    bad = np.arange(ROWS) % 4 < 2
    assert not counts[bad].any()
    np.testing.assert_array_equal(counts[~bad].sum(axis=1), 4)


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize("smoothing", [0.5, 100.0])
def test_smoothing_and_signs_act_on_magnitudes(chunk, smoothing):
    # q is proportional to |w| + c. With c > 0 the sampler splits trials into
    # uniform ones (share c d / (||w||_1 + c d)) and searched ones, so this is
    # the joint goodness of fit of that path, signs flipped or not; c = 100
    # makes nearly every trial uniform, c = 0.5 mixes both kinds.
    signed = np.tile([-0.2, 0.0, 0.5], (ROWS, 1))
    probs = zim_pmf(outcomes(4, 3), 4, 0.6, np.abs(signed[0]) + smoothing)
    for sign, seed in ((1.0, 12), (-1.0, 13)):
        counts = draw(sign * signed, 4, 0.6, [seed, chunk or 0], chunk, smoothing=smoothing)
        observed = joint_counts(counts, 4)
        assert chisquare_pvalue(observed, probs) > P_MIN
        assert counts[:, 1].any()  # the zero entry is drawn through the smoothing


def test_same_seed_same_counts_other_seed_other_counts():
    weights = np.tile(Q3, (ROWS, 1))
    first = draw(weights, 4, 0.6, [21, 22], chunk=4)
    np.testing.assert_array_equal(first, draw(weights, 4, 0.6, [21, 22], chunk=4))
    # Scalar n and r mean the same as one value per row.
    per_row = draw(weights, np.full(ROWS, 4), np.full(ROWS, 0.6), [21, 22], chunk=4)
    np.testing.assert_array_equal(first, per_row)
    assert np.any(first != draw(weights, 4, 0.6, [21, 23], chunk=4))
    assert np.any(first != draw(weights, 4, 0.6, [22, 22], chunk=4))


def test_chunk_size_covers_the_binomial():
    assert sampling.chunk_size(0, 0.5) == 1
    assert sampling.chunk_size(10, 0.3) == 10  # capped at n
    assert sampling.chunk_size(10**6, 0.01) == 10_000 + 800 + 16
    assert sampling.chunk_size(10**9, 1.0) == sampling.MAX_CHUNK
    # One iteration of the passing-trial loop suffices unless N ~ Binomial(n, r)
    # reaches the chunk, which has probability below 1e-15.
    for n, r in [(100, 0.5), (10**4, 0.01), (10**6, 0.01)]:
        assert stats.binom.sf(sampling.chunk_size(n, r) - 1, n, r) < 1e-15


# ------------------------------------------------------- many blocks, large d

D_BLOCKS = 1000  # many blocks, the last one partial (padding)
ZEROS = np.r_[0, 1, 127:256, 500, 999]  # first, last, whole blocks, lone zeros


def block_weights():
    i = np.arange(D_BLOCKS)
    weights = 1.0 + (i * 37) % 11
    weights[ZEROS] = 0.0
    return weights


@pytest.mark.parametrize("chunk", [None, 3])
def test_many_blocks_follow_q(chunk):
    # Rows alternate between the weights and their reverse. Given the row
    # totals, the per-category sums over rows are Multinomial(sum, q).
    weights = block_weights()
    rows = 1000
    table = np.where(np.arange(rows)[:, None] % 2 == 0, weights, weights[::-1])
    counts = draw(table, 100, 0.5, [31, chunk or 0], chunk)
    for parity, w in enumerate([weights, weights[::-1]]):
        summed = counts[parity::2].sum(axis=0)
        assert not summed[w == 0].any()  # zero-weight categories never chosen
        assert chisquare_pvalue(summed, w) > P_MIN
        bins = summed.reshape(20, 50).sum(axis=1)  # bins straddle block edges
        assert chisquare_pvalue(bins, w.reshape(20, 50).sum(axis=1)) > P_MIN
    total = counts.sum()
    lo, hi = binomial_interval(rows * 100, 0.5)
    assert lo <= total <= hi


BIG = 10**6


def test_large_d_total_and_halves_are_plausible():
    # One row, d = n = 1e6, r = 0.01: N ~ Binomial(1e6, 0.01) (mean 1e4, sd 99.5).
    weights = np.where(np.arange(BIG) < BIG // 2, 1.0, 3.0)
    counts = draw(weights[None], BIG, 0.01, [41, 42], dtype=np.float32)[0]
    assert counts.min() >= 0
    total = counts.sum()
    lo, hi = binomial_interval(BIG, 0.01)
    assert lo <= total <= hi
    # Given N, the first half (a quarter of the mass) holds Binomial(N, 1/4).
    lo, hi = binomial_interval(total, 0.25)
    assert lo <= counts[: BIG // 2].sum() <= hi


def test_float64_sums_keep_tiny_weights():
    # One weight 1e9 first, then 999,999 weights 1. In float32, 1e9 + 1 == 1e9
    # (the spacing there is 64), so a float32 running sum gives the small
    # weights no mass at all. Exactly, with r = 1 and n = 1e6 trials, their
    # total is Binomial(1e6, p) with p = 999,999 / 1,000,999,999 (mean 999.0,
    # sd 31.6); the interval is about 999 +- 140. Both 1e9 and 1 are exact in
    # a float32 input: the sums must still be formed in float64.
    weights = np.ones(BIG)
    weights[0] = 1e9
    counts = draw(weights[None], BIG, 1.0, [43, 44], dtype=np.float32)[0]
    assert counts.sum() == BIG
    small = counts[1:].sum()
    lo, hi = binomial_interval(BIG, (BIG - 1) / (1e9 + BIG - 1))
    assert lo <= small <= hi
    # They are spread over the whole range: given S, the first 500,000 of the
    # 999,999 small weights hold Binomial(S, 500,000 / 999,999).
    lo, hi = binomial_interval(small, (BIG // 2) / (BIG - 1))
    assert lo <= counts[1 : BIG // 2 + 1].sum() <= hi


# ------------------------------------------------------------------ grid_moves


def gradients(bad=None):
    """A float32 (3, 4) gradient with zeros and a float64 (5,) one."""
    first = np.array([[0.5, -1.0, 0.0, 2.0], [0.0, -0.25, 1.5, 0.0], [3.0, 0.0, -0.5, 1.0]])
    second = np.array([-2.0, 0.75, -0.1, 1.25, -1.0])
    if bad is not None:
        second[3] = bad
    return [tf.constant(first, tf.float32), tf.constant(second, tf.float64)]


def moves(grads, rate, seed, trials, smoothing, unit, chunk):
    out = sampling.grid_moves(
        grads, tf.constant(rate, tf.float64), tf.constant(seed, tf.int32), trials, smoothing, unit, chunk
    )
    return [m.numpy() for m in out]


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


MOVE_ARGS = dict(trials=40, smoothing=0.5, unit=1.0, chunk=8)


def test_grid_moves_are_unit_times_counts_times_sign():
    grads = gradients()
    g = flat([t.numpy() for t in grads])
    zero_hits = 0
    for seed in range(10):
        out = moves(grads, 0.7, [seed, 3], **MOVE_ARGS)
        assert [m.shape for m in out] == [(3, 4), (5,)]
        assert [m.dtype for m in out] == [np.float32, np.float64]
        counts = draw(g[None], 40, 0.7, [seed, 3], chunk=8, smoothing=0.5)[0]
        np.testing.assert_array_equal(flat(out), counts * np.sign(g))
        zero_hits += counts[g == 0].sum()
    # sign(0) = 0: the zero entries did receive trials (smoothing > 0), yet never moved.
    assert zero_hits > 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_gives_zero_moves(bad):
    out = moves(gradients(bad), 0.7, [1, 3], **MOVE_ARGS)
    for m in out:
        assert np.all(m == 0.0)  # NaN would fail this too


HALF_ARGS = dict(trials=None, smoothing=0.0, unit=0.5, chunk=4)


def test_zero_gradient_without_smoothing_gives_zero_moves():
    zero = [tf.zeros([3, 4], tf.float32), tf.zeros([5], tf.float64)]
    out = moves(zero, 1.0, [2, 3], **HALF_ARGS)
    for m in out:
        assert np.all(m == 0.0)


def dense_gradients():
    g = gradients()
    return [g[0] + 0.125, g[1]]  # every entry non-zero


@pytest.mark.parametrize("rate, passing", [(1.0, 17), (1.5, 17), (0.0, 0), (-0.5, 0)])
def test_trials_none_means_every_entry(rate, passing):
    # With no smoothing and no zero gradient, sum |move| / unit is the number of
    # passing trials: all d = 17 at rate 1 (or above: clipped), none at rate 0.
    out = moves(dense_gradients(), rate, [4, 3], **HALF_ARGS)
    assert np.abs(flat(out)).sum() / 0.5 == passing


def test_unit_half_moves_by_multiples_of_half():
    out = flat(moves(dense_gradients(), 1.0, [5, 3], **HALF_ARGS))
    np.testing.assert_array_equal(out * 2, np.round(out * 2))
    assert np.any(out * 2 % 2 == 1)  # some moves are odd multiples of 0.5


def test_targets_at_or_past_the_total_stay_in_range_op_by_op():
    # Segments of 300 and 5 cells: the short one walks single-child levels on
    # top. Op by op an out-of-range gather raises, so this fails if a walk runs
    # off the padded end (XLA would clamp silently).
    layout = sampling.Segments([(0, 2, 300), (600, 1, 5)])
    tree = sampling._SegmentTree(tf.ones([605], tf.float64), layout, sampling._Plain("float64"))
    np.testing.assert_array_equal(tree.total.numpy(), [300.0, 300.0, 5.0])
    segment = tf.constant([0, 0, 1, 2, 2, 0, 1, 2], tf.int32)
    found = tree.locate(segment, tf.constant([299.5, 0.5, 3.2, 0.0, 4.99, 305.0, 1e9, 5.0], tf.float64)).numpy()
    np.testing.assert_array_equal(found[:5], [299, 0, 3, 0, 4])
    assert np.all(found[5:7] < 304) and found[7] < 16  # past the total: still inside the padded leaves
    # Rate 1 and chunk = trials: every trial placed, op by op.
    counts = sampling.sample_counts(tf.ones([1, 300]), 300, 1.0, [22, 1], chunk=300, jit_compile=False)
    assert int(tf.reduce_sum(counts)) == 300


# --------------------------------------------------------------- binomials


@pytest.mark.parametrize(
    "n, p",
    [
        (7, 0.3),  # inversion
        (40, 0.2),  # inversion, n p = 8
        (12, 0.9),  # inversion after the flip to p = 0.1
        (60, 0.5),  # BTRS, n p = 30
        (10**6, 0.1),  # BTRS, large n
        (10**8, 0.37),  # BTRS, the trials of ResNet-50's scope and more
        (10**8, 3e-8),  # inversion: large n, n p = 3
    ],
)
def test_binomial_draws_follow_scipy(n, p):
    # 20,000 i.i.d. draws in one call; chi-square over every value with
    # expected count >= 5 (the tails pooled) against SciPy's exact pmf.
    draws = sampling.binomial(tf.constant(np.full(ROWS, float(n))), tf.constant(np.full(ROWS, p)), [7, 8]).numpy()
    assert np.all(draws == np.round(draws)) and draws.min() >= 0 and draws.max() <= n
    lo, hi = stats.binom.ppf(1e-9, n, p), stats.binom.isf(1e-9, n, p)
    values = np.arange(lo, hi + 1)
    observed = np.array([np.sum(draws == v) for v in values])
    probs = stats.binom.pmf(values, n, p)
    assert observed.sum() == ROWS  # nothing outside the central 1 - 2e-9 of the mass
    assert chisquare_pvalue(observed, probs / probs.sum()) > P_MIN


def test_binomial_edges():
    count = tf.constant([0.0, 5.0, 5.0, 9.0, 1e9], tf.float64)
    prob = tf.constant([0.5, 0.0, 1.0, 1.5, 1.0], tf.float64)
    np.testing.assert_array_equal(sampling.binomial(count, prob, [1, 1]).numpy(), [0.0, 0.0, 5.0, 9.0, 1e9])


# -------------------------------------------------- segments of unequal sizes


def test_segments_of_unequal_sizes_each_follow_their_law():
    # One draw over 3-cell, 40-cell and 1-cell segments (so the trees differ in
    # depth and the short ones walk single-child levels): each 3-cell segment's
    # joint counts follow ZIM(4, 0.6, Q3), each 40-cell segment's first cell is
    # Binomial(10, 0.5 q_0), the 1-cell segments get Binomial(3, 0.5).
    segments = 5000
    forty = np.linspace(1.0, 4.0, 40)
    layout = sampling.Segments([(0, segments, 3), (3 * segments, segments, 40), (43 * segments, segments, 1)])
    magnitudes = np.concatenate([np.tile(Q3, segments), np.tile(forty, segments), np.full(segments, 2.0)])
    trials = np.repeat([4.0, 10.0, 3.0], segments)
    rate = np.repeat([0.6, 0.5, 0.5], segments)
    draw_counts = tf.function(sampling.draw_counts, jit_compile=True, autograph=False)
    counts = draw_counts(
        tf.constant(magnitudes), layout, tf.constant(trials), tf.constant(rate), tf.constant(0.0, tf.float64),
        tf.constant([3, 4]), [4, 6, 2], 64,
    ).numpy()
    three = counts[: 3 * segments].reshape(segments, 3)
    assert chisquare_pvalue(joint_counts(three, 4), zim_pmf(outcomes(4, 3), 4, 0.6, Q3)) > P_MIN
    first = counts[3 * segments : 43 * segments].reshape(segments, 40)[:, 0]
    q0 = forty[0] / forty.sum()
    assert chisquare_pvalue(np.bincount(first, minlength=11), stats.binom.pmf(np.arange(11), 10, 0.5 * q0)) > P_MIN
    ones = counts[43 * segments :]
    assert chisquare_pvalue(np.bincount(ones, minlength=4), stats.binom.pmf(np.arange(4), 3, 0.5)) > P_MIN


# ------------------------------------------------------------- stateless seeds


def test_folded_seeds_are_distinct_with_balanced_bits_and_keyed_uniforms_are_uniform():
    # keras_zim.backend's fold_in hashes (seed, data) into a new seed: for 4,096
    # consecutive steps of one stream (as the optimizer folds in `iterations`)
    # the seeds are distinct, each of their 64 bits is 1 with probability 1/2
    # (binomial central intervals holding all but P_MIN / 64 each), and the
    # first uniform drawn from each seed is Uniform[0, 1) (chi-square over 64
    # bins), in eager mode and under XLA.
    from keras_zim import backend

    steps = 4096
    base = backend.fold_in(tf.constant([0, 0]), 3)  # seed words 0: the hash must not degenerate

    def first_uniforms(data):
        seeds = tf.map_fn(lambda d: backend.fold_in(base, d), data, fn_output_signature=tf.int32)
        uniforms = tf.map_fn(lambda s: backend.uniform([1], s, "float64")[0], seeds, fn_output_signature=tf.float64)
        return seeds, uniforms

    low, high = binomial_interval(steps, 0.5, P_MIN / 64)
    for run in (first_uniforms, tf.function(first_uniforms, jit_compile=True)):
        seeds, uniforms = (t.numpy() for t in run(tf.range(steps)))
        words = seeds.view(np.uint32).astype(np.uint64)
        assert len(np.unique(words[:, 0] << 32 | words[:, 1])) == steps
        ones = [(seeds[:, w].view(np.uint32) >> bit & 1).sum() for w in range(2) for bit in range(32)]
        assert low <= min(ones) and max(ones) <= high
        observed = np.bincount(np.floor(uniforms * 64).astype(int), minlength=64)
        assert chisquare_pvalue(observed, np.full(64, 1 / 64)) > P_MIN

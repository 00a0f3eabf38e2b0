"""Tests of `keras_zim.distributions`, in the manner of TFP's own tests.

Shapes, dtypes, invalid parameters, `log_prob` against SciPy and TFP's
`Multinomial` over `[1 - r, r q]`, analytic moments, and sampling against the
exact pmf and against TFP's samplers. Statistical thresholds: a chi-square
p-value above `P_MIN = 1e-4`; sample moments within `Z = 5` standard errors
computed from the exact pmf (two-sided normal tail 5.7e-7). Seeds are fixed.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from exact_law import P_MIN, Q3, Z, chisquare_pvalue, joint_counts, outcomes, two_sample_pvalue, zim_pmf
from keras_zim.distributions import ZeroInflatedMultinomial
from keras_zim.distributions import reference_sample

tfd = tfp.distributions


# ----------------------------------------------------------------------- shapes

# Every case draws 12 rows of 3 categories: one compiled sampler for all.
SHAPE_CASES = [
    # total_count, rate, probs, batch_shape, sample_shape
    (4.0, 0.5, Q3, [], [12]),
    (4.0, 0.5, Q3, [], [3, 4]),
    ([4.0, 3.0], 0.5, Q3, [2], [6]),
    ([[4.0], [2.0]], [0.1, 0.5, 0.9], Q3, [2, 3], [2]),
    (4.0, [[0.5], [1.0]], np.tile(Q3, (3, 1)), [2, 3], [2]),
]


@pytest.mark.parametrize("total_count, rate, probs, batch, sample_shape", SHAPE_CASES)
def test_shapes(total_count, rate, probs, batch, sample_shape):
    dist = ZeroInflatedMultinomial(total_count, rate, probs.astype(np.float32))
    assert dist.batch_shape == batch
    assert dist.event_shape == [3]
    assert dist.batch_shape_tensor().numpy().tolist() == batch
    assert dist.event_shape_tensor().numpy().tolist() == [3]
    x = dist.sample(sample_shape, seed=[1, 2])
    assert x.shape == sample_shape + batch + [3]
    assert dist.log_prob(x).shape == sample_shape + batch
    assert dist.mean().shape == batch + [3]
    assert dist.variance().shape == batch + [3]
    assert dist.covariance().shape == batch + [3, 3]
    x = x.numpy()
    assert np.all(x >= 0) and np.all(x == np.round(x))
    n = np.broadcast_to(total_count, batch)
    assert np.all(x.sum(axis=-1) <= n)


@pytest.mark.parametrize(
    "probs, dtype",
    [
        ([0.2, 0.3, 0.5], tf.float32),
        (np.array([0.2, 0.3, 0.5], np.float32), tf.float32),
        (np.array([0.2, 0.3, 0.5], np.float64), tf.float64),
        (tf.constant([0.2, 0.3, 0.5], tf.float64), tf.float64),
    ],
)
def test_dtype_follows_probs(probs, dtype):
    dist = ZeroInflatedMultinomial(4.0, 0.5, probs)
    assert dist.dtype == dtype
    assert dist.total_count.dtype == dtype and dist.rate.dtype == dtype
    x = dist.sample(12, seed=[3, 4])
    assert x.dtype == dtype
    assert dist.log_prob(x).dtype == dtype
    assert dist.mean().dtype == dtype
    assert dist.covariance().dtype == dtype


def test_batch_members_use_their_own_parameters():
    # n = [0, 4], r = [1, 1], and all mass on one category per member: exact.
    probs = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    x = ZeroInflatedMultinomial([0.0, 4.0], 1.0, probs).sample(6, seed=[5, 6]).numpy()
    np.testing.assert_array_equal(x, np.broadcast_to([[0, 0, 0], [0, 0, 4]], (6, 2, 3)))
    # r = [0, 1] broadcast against n = 4: no trial passes, or all do.
    x = ZeroInflatedMultinomial(4.0, [0.0, 1.0], Q3).sample(6, seed=[5, 7]).numpy()
    np.testing.assert_array_equal(x.sum(axis=-1), np.broadcast_to([0, 4], (6, 2)))


def test_slicing_keeps_parameters():
    dist = ZeroInflatedMultinomial([[4.0], [2.0]], [0.1, 0.5, 0.9], Q3)
    member = dist[1, 2]
    assert member.batch_shape == []
    assert float(member.total_count) == 2.0
    assert float(member.rate) == pytest.approx(0.9)
    np.testing.assert_allclose(member.probs, Q3, rtol=1e-6)


def test_sample_is_deterministic_given_the_seed():
    dist = ZeroInflatedMultinomial(4.0, 0.5, Q3)
    first = dist.sample(12, seed=[7, 8]).numpy()
    np.testing.assert_array_equal(first, dist.sample(12, seed=[7, 8]).numpy())
    assert np.any(first != dist.sample(12, seed=[7, 9]).numpy())


def test_sample_in_a_tf_function_matches_eager():
    dist = ZeroInflatedMultinomial(4.0, 0.5, Q3)
    in_graph = tf.function(lambda: dist.sample(12, seed=[7, 8]))()
    np.testing.assert_array_equal(dist.sample(12, seed=[7, 8]).numpy(), in_graph.numpy())


# ------------------------------------------------------------ log_prob, moments

LOG_PROB_CASES = [(4, 0.6, Q3), (4, 0.0, Q3), (4, 1.0, Q3), (3, 0.25, np.array([0.25, 0.0, 0.75]))]


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("n, r, q", LOG_PROB_CASES)
def test_log_prob_matches_scipy_and_tfp(n, r, q, dtype, rtol):
    x = outcomes(n, 3).astype(dtype)
    dist = ZeroInflatedMultinomial(dtype(n), dtype(r), q.astype(dtype))
    log_prob = dist.log_prob(x).numpy()
    assert log_prob.dtype == dtype
    with np.errstate(divide="ignore"):
        expected = np.log(zim_pmf(x.astype(np.int64), n, r, q))
    np.testing.assert_allclose(log_prob, expected, rtol=rtol, atol=rtol)
    full = np.concatenate([n - x.sum(axis=1, keepdims=True), x], axis=1)
    multinomial = tfd.Multinomial(dtype(n), probs=np.concatenate([[1 - r], r * q]).astype(dtype))
    np.testing.assert_allclose(log_prob, multinomial.log_prob(full).numpy(), rtol=rtol, atol=rtol)
    # The pmf sums to 1 over the whole support.
    assert np.exp(log_prob).sum() == pytest.approx(1.0, rel=10 * rtol)


def test_log_prob_broadcasts_over_a_batch():
    n, r = np.array([4.0, 3.0]), np.array([0.6, 0.25])
    q = np.array([Q3, [0.25, 0.0, 0.75]])
    dist = ZeroInflatedMultinomial(n, r, q)
    x = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])
    expected = [zim_pmf(x[i].astype(int), int(n[i]), r[i], q[i]) for i in range(2)]
    np.testing.assert_allclose(dist.prob(x).numpy(), expected, rtol=1e-5)
    # A sample dimension in front of the batch.
    expected = np.array(expected)[None].repeat(4, axis=0)
    np.testing.assert_allclose(dist.prob(np.stack([x] * 4)).numpy(), expected, rtol=1e-5)


def test_log_prob_broadcasts_one_outcome_against_a_batch_of_total_counts():
    n, r = np.array([4.0, 3.0]), 0.6
    x = np.array([1.0, 0.0, 2.0])
    expected = [zim_pmf(x.astype(int), int(size), r, Q3) for size in n]
    np.testing.assert_allclose(ZeroInflatedMultinomial(n, r, Q3).prob(x).numpy(), expected, rtol=1e-5)


def test_moments_match_the_formulas():
    n = np.array([[4.0], [10.0]])
    r = np.array([0.3, 0.8])
    q = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]])
    dist = ZeroInflatedMultinomial(n, r, q.astype(np.float64))
    nr = (n * r)[..., None]  # [2, 2, 1]
    rq = r[:, None] * q  # [2, 3]
    np.testing.assert_allclose(dist.mean(), nr * q, rtol=1e-12)
    np.testing.assert_allclose(dist.variance(), nr * q * (1 - rq), rtol=1e-12)
    cov = -nr[..., None] * r[:, None, None] * q[:, :, None] * q[:, None, :]
    diagonal = np.arange(3)
    cov[..., diagonal, diagonal] = nr * q * (1 - rq)
    np.testing.assert_allclose(dist.covariance(), cov, rtol=1e-12)


# ------------------------------------------------------------------- sampling

DRAWS = 10_000
SAMPLE_CASES = [(4, 0.6, Q3), (4, 0.25, np.array([0.25, 0.0, 0.75]))]


@pytest.fixture(scope="module")
def batch_draws():
    """DRAWS samples of a batch of the two SAMPLE_CASES: [DRAWS, 2, 3]."""
    n = [float(c[0]) for c in SAMPLE_CASES]
    r = [c[1] for c in SAMPLE_CASES]
    q = np.stack([c[2] for c in SAMPLE_CASES])
    return ZeroInflatedMultinomial(n, r, q).sample(DRAWS, seed=[11, 12]).numpy()


@pytest.mark.parametrize("case", range(len(SAMPLE_CASES)))
def test_samples_follow_the_exact_pmf(batch_draws, case):
    n, r, q = SAMPLE_CASES[case]
    observed = joint_counts(batch_draws[:, case], n)
    assert chisquare_pvalue(observed, zim_pmf(outcomes(n, 3), n, r, q)) > P_MIN


@pytest.mark.parametrize("case", range(len(SAMPLE_CASES)))
def test_sample_moments_match_the_analytic_ones(batch_draws, case):
    # Standard errors from the exact pmf: SE(mean_i) = sqrt(Var_i / m),
    # SE(cov_ij) = sqrt((E[d_i^2 d_j^2] - Cov_ij^2) / m), d = x - E[x], m draws.
    n, r, q = SAMPLE_CASES[case]
    dist = ZeroInflatedMultinomial(float(n), r, q)
    support = outcomes(n, 3)
    p = zim_pmf(support, n, r, q)
    d = support - p @ support
    cov = np.einsum("o,oi,oj->ij", p, d, d)
    fourth = np.einsum("o,oi,oj->ij", p, d**2, d**2)
    se_cov = np.sqrt((fourth - cov**2) / DRAWS)
    se_mean = np.sqrt(np.diag(cov) / DRAWS)
    x = batch_draws[:, case].astype(np.float64)
    assert np.all(np.abs(x.mean(axis=0) - dist.mean().numpy()) <= Z * se_mean)
    assert np.all(np.abs(np.cov(x, rowvar=False) - dist.covariance().numpy()) <= Z * se_cov)
    assert np.all(np.abs(x.var(axis=0, ddof=1) - dist.variance().numpy()) <= Z * np.diag(se_cov))


@pytest.mark.parametrize("case", range(len(SAMPLE_CASES)))
def test_sampler_agrees_with_tfp_multinomial(batch_draws, case):
    # TFP's own Multinomial over [1 - r, r q], batched, no-op count dropped.
    n, r, q = SAMPLE_CASES[case]
    probs = np.concatenate([[1 - r], r * q])
    theirs = tfd.Multinomial(float(n), probs=probs).sample(DRAWS, seed=[13, 14 + case])
    ours = joint_counts(batch_draws[:, case], n)
    theirs = joint_counts(theirs.numpy()[:, 1:], n)
    assert two_sample_pvalue(ours, theirs) > P_MIN


@pytest.fixture(scope="module")
def reference_draws():
    """1,000 draws of `reference_sample` (Bernoulli gates, then Multinomial)."""
    n, r, q = SAMPLE_CASES[0]
    draw = tf.function(lambda seed: reference_sample(n, r, tf.constant(q), seed))
    return np.stack([draw(tf.constant([s, 15])).numpy() for s in range(1000)])


def test_reference_sample_follows_the_exact_pmf(reference_draws):
    n, r, q = SAMPLE_CASES[0]
    observed = joint_counts(reference_draws, n)
    assert chisquare_pvalue(observed, zim_pmf(outcomes(n, 3), n, r, q)) > P_MIN


def test_sampler_agrees_with_reference_sample(batch_draws, reference_draws):
    n = SAMPLE_CASES[0][0]
    ours = joint_counts(batch_draws[: len(reference_draws), 0], n)
    assert two_sample_pvalue(ours, joint_counts(reference_draws, n)) > P_MIN


# ------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rate=-0.1), "`rate` must be in [0, 1]"),
        (dict(rate=1.1), "`rate` must be in [0, 1]"),
        (dict(probs=[0.5, 0.6, 0.1]), "`probs` must sum to 1"),
        (dict(probs=[-0.1, 0.6, 0.5]), "`probs` must be >= 0"),
        (dict(total_count=-1.0), "`total_count` must be >= 0"),
        (dict(total_count=2.5), "`total_count` must be whole"),
    ],
)
def test_validate_args_rejects_bad_parameters(changes, message):
    args = dict(total_count=4.0, rate=0.5, probs=[0.2, 0.3, 0.5])
    args.update(changes)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        dist = ZeroInflatedMultinomial(validate_args=True, **args)
        dist.mean()


@pytest.mark.parametrize(
    "x, message",
    [
        ([2.0, 2.0, 1.0], "Samples must sum to <= total_count"),
        ([1.5, 0.0, 0.0], "Samples must be whole"),
        ([-1.0, 1.0, 0.0], "Samples must be >= 0"),
    ],
)
def test_validate_args_rejects_bad_log_prob_argument(x, message):
    dist = ZeroInflatedMultinomial(4.0, 0.5, [0.2, 0.3, 0.5], validate_args=True)
    assert np.isfinite(dist.log_prob([2.0, 1.0, 1.0]).numpy())
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        dist.log_prob(x)

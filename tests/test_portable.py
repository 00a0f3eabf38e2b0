"""Backend-portable tests of the sampler and the optimizer: `keras.ops` and NumPy only.

They run on the backend that `KERAS_BACKEND` names: in-process on TensorFlow
(the suite's default) and, through test_backends.py, in subprocesses on JAX
and PyTorch. Statistical thresholds follow test_sampling.py: chi-square
p-values above `P_MIN`, moments within `Z` standard errors, binomial
central intervals; seeds are fixed.
"""

import fractions
import os

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats

import keras_zim
from exact_law import P_MIN, Z, binomial_interval, chisquare_pvalue, joint_counts, outcomes, zim_pmf
from keras_zim import backend, sampling

BACKEND = keras.backend.backend()
PRECISIONS = ["float64", "float32x2"] if backend.has_float64() else ["float32x2"]
JIT = BACKEND != "torch"  # Keras runs the torch backend eagerly


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


# ------------------------------------------------------------------ the law


@pytest.mark.parametrize("precision", PRECISIONS)
def test_joint_law_of_one_step(precision):
    # 20,000 i.i.d. rows per case: the joint pmf of (x_1, x_2, x_3) by chi-square.
    cases = [(4, 0.6, [2.0, 3.0, 5.0], 0.0), (3, 0.25, [1.0, 0.0, 4.0], 0.5)]
    rows = 20_000
    for k, (n, r, w, c) in enumerate(cases):
        counts = _numpy(sampling.sample_counts(np.tile(np.float32(w), (rows, 1)), n, r, [3, k], smoothing=c,
                                               precision=precision))
        q = (np.array(w) + c) / (np.sum(w) + c * len(w))
        assert chisquare_pvalue(joint_counts(counts, n), zim_pmf(outcomes(n, 3), n, r, q)) > P_MIN


@pytest.mark.parametrize("precision", PRECISIONS)
def test_moments_at_a_million(precision):
    # One draw at d = n = 1e6, r = 0.1, c = 1, |g| over 12 orders of magnitude.
    # Bin sums of x over 100 bins of similar q are Binomial(n, r Q_bin) each
    # (a sum of multinomial cells); all within Z standard errors; the total
    # N ~ Binomial(n, r) inside its central interval.
    d, r, c = 10**6, 0.1, 1.0
    rng = np.random.default_rng(4)
    g = (10.0 ** rng.uniform(-12, 1, d) * rng.choice([-1, 1], d)).astype(np.float32)
    counts = _numpy(sampling.sample_counts(g[None, :], d, r, [9, 9], smoothing=c, precision=precision))[0]
    q = (np.abs(g.astype(np.float64)) + c) / (np.abs(g.astype(np.float64)).sum() + c * d)
    lo, hi = binomial_interval(d, r)
    assert lo <= counts.sum() <= hi
    bins = np.array_split(np.argsort(q), 100)
    for cells in bins:
        mean = d * r * q[cells].sum()
        assert abs(counts[cells].sum() - mean) <= Z * np.sqrt(mean * (1 - r * q[cells].sum()))


def _exact_prefix(mantissas, exponents, positions):
    """Exact prefix sums of `|g|` at `positions`, as Fractions (g = m * 2**e)."""
    result = [fractions.Fraction(0)] * len(positions)
    for e in np.unique(exponents):
        part = np.where(exponents == e, mantissas, 0).astype(np.int64)
        sums = np.concatenate([[0], np.cumsum(part)])[positions]
        result = [s + fractions.Fraction(int(v)) * fractions.Fraction(2) ** int(e) for s, v in zip(result, sums)]
    return result


# d = 1e8 (9 GB, 30 s) once, on TensorFlow in the main process; 1e6 on every backend.
@pytest.mark.parametrize("size", [10**6] + ([10**8] if BACKEND == "tensorflow" else []))
@pytest.mark.parametrize("precision", PRECISIONS)
def test_searched_trials_land_within_1e_13_of_q(precision, size):
    # The inverse CDF maps u in [0, 1) to a cell; P(cell i) = the length of
    # the u-interval that maps to i. Put u just below and just above each
    # exact boundary B_i / S (exact rational prefix sums of |g|): landing
    # left of i below it and at or right of i above it shows every boundary
    # within delta = 2**-44 of its place, so |P(i) - |g_i| / S| <= 2 delta = 1.1e-13.
    rng = np.random.default_rng(5)
    mantissas = rng.integers(1 << 23, 1 << 24, size)
    exponents = rng.choice([-63, -43, -23], size)  # |g| in [2**-40, 2**1): 12 orders of magnitude
    g = (mantissas * 2.0 ** exponents.astype(np.float64)).astype(np.float32)
    arith = sampling._DoubleFloat32() if precision == "float32x2" else sampling._Plain("float64")
    tree = sampling._SegmentTree(ops.convert_to_tensor(g), sampling.Segments([(0, 1, size)]), arith)
    boundaries = np.unique(np.concatenate([rng.integers(1, size, 300), [1, size - 1]]))
    prefix = _exact_prefix(mantissas, exponents, np.concatenate([boundaries, [size]]))
    inside = [b / prefix[-1] + DELTA < 1 for b in prefix[:-1]]  # u past 1 is no uniform: nothing to check
    boundaries = boundaries[inside]
    words = _straddling_words([b / prefix[-1] for b, keep in zip(prefix[:-1], inside) if keep])
    segment = ops.zeros([len(words)], "int32")
    mass = backend.gather(tree.total, segment)
    if precision == "float32x2":
        target = arith.scaled(ops.convert_to_tensor(np.stack([words >> 24, words & (2**24 - 1)]).astype(np.int32)), mass)
    else:
        target = ops.convert_to_tensor(words.astype(np.float64) / 2.0**48) * mass
    cells = _numpy(tree.locate(segment, target))
    assert np.all(cells[0::2] < boundaries) and np.all(cells[1::2] >= boundaries)


DELTA = fractions.Fraction(1, 2**44)


def _straddling_words(points):
    """48-bit uniforms `u = k / 2**48` at `point - DELTA` and `point + DELTA` for each point."""
    return np.array([int((p + side) * 2**48) for p in points for side in (-DELTA, DELTA)], np.int64)


def _words(values):
    return [ops.convert_to_tensor((values >> 24).astype(np.int32)), ops.convert_to_tensor((values & (2**24 - 1)).astype(np.int32))]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_per_segment_magnitudes_draw_what_their_concatenation_draws(precision):
    # The variable scope passes one tensor per segment, so that the block sums
    # of large segments read each where it is: the same counts, bit for bit,
    # as the concatenation (segments below and above _ROW_CELLS, one group
    # through the dense pass where float64 has it).
    sizes = [3, 3, 40, 20_000, 20_000, 70_000]
    assert min(sizes) < sampling._ROW_CELLS <= max(sizes)
    layout = sampling.Segments([(0, 2, 3), (6, 1, 40), (46, 2, 20_000), (40_046, 1, 70_000)])
    rng = np.random.default_rng(5)
    dtype = np.float64 if precision == "float64" else np.float32
    rows = [(rng.normal(0.0, 1e-3, size) * (rng.random(size) < 0.9)).astype(dtype) for size in sizes]

    def draw(magnitudes):
        return _numpy(sampling.draw_counts(
            magnitudes, layout, sizes, ops.convert_to_tensor(np.asarray(0.1, dtype)), 1.0,
            ops.convert_to_tensor(np.asarray([6, 7], np.int32)), [2_000] * 4, 256, precision=precision,
            rate_hint=0.1))

    whole = draw(ops.convert_to_tensor(np.concatenate(rows)))
    np.testing.assert_array_equal(draw([ops.convert_to_tensor(row) for row in rows]), whole)
    per_segment = [part.sum() for part in np.split(whole, np.cumsum(sizes)[:-1])]
    lows, highs = zip(*(binomial_interval(size, 0.1) for size in sizes))
    assert all(low <= total <= high for low, total, high in zip(lows, per_segment, highs))
    with pytest.raises(ValueError, match="5 magnitude tensors for 6 segments"):
        sampling.draw_counts([ops.convert_to_tensor(row) for row in rows[:5]], layout, sizes, 0.1, 1.0,
                             ops.convert_to_tensor(np.asarray([6, 7], np.int32)), [2_000] * 4, 256)


def test_float32x2_uniform_share_and_uniform_cells_within_1e_13():
    # The float32x2 draw lands a trial uniformly with probability
    # s = c d / (||g||_1 + c d) (a 48-bit threshold), then on floor(u d):
    # both to within 2 * 2**-44 of exact, for d up to 2**30.
    rng = np.random.default_rng(6)
    mass = [(float(np.float32(m)), float(np.float32(m - float(np.float32(m))))) for m in 10.0 ** rng.uniform(-12, 8, 50)]
    c, d = 1.0, 10**8 + 7
    spread = sampling._mul_parts(*(ops.convert_to_tensor(np.float32(v)) for v in (c, 0.0, np.float32(d), d - int(np.float32(d)))))
    hi, lo = (ops.convert_to_tensor(np.float32([m[k] for m in mass])) for k in (0, 1))
    whole = sampling._add_parts(hi, lo, spread[0] + 0 * hi, spread[1] + 0 * hi)
    share = sampling._div_parts(spread[0] + 0 * hi, spread[1] + 0 * hi, *whole)
    a, b = (_numpy(t).astype(np.int64) for t in sampling._threshold(*share))
    for (m_hi, m_lo), a_k, b_k in zip(mass, a, b):
        exact = fractions.Fraction(c * d) / (fractions.Fraction(m_hi) + fractions.Fraction(m_lo) + c * d)
        assert abs(fractions.Fraction(int(a_k) * 2**24 + int(b_k), 2**48) - exact) < DELTA
    for size in (3, 1000, 10**8 + 7, 2**30 - 1):
        cells = np.unique(np.concatenate([rng.integers(1, size, 200), [1, size - 1]]))
        words = _straddling_words([fractions.Fraction(int(i), size) for i in cells])
        found = _numpy(sampling._uniform_cells(_words(words), ops.convert_to_tensor(np.full(len(words), size, np.int32))))
        assert np.all(found[0::2] == cells - 1) and np.all(found[1::2] == cells)


# ------------------------------------------------------------ the optimizer


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, kernel_initializer=keras_zim.initializers.Discrete(seed=seed)),
        keras.layers.Dense(3, kernel_initializer=keras_zim.initializers.Discrete(seed=seed + 1)),
        keras.layers.LayerNormalization(center=False, scale=False),
    ])


DATA = np.random.default_rng(0).normal(size=(48, 6)).astype("float32"), np.random.default_rng(1).normal(size=(48, 3)).astype("float32")


def _fit(optimizer, epochs=2, model=None):
    model = model or _model()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT)
    model.fit(*DATA, epochs=epochs, batch_size=16, shuffle=False, verbose=0)
    return model


def _weights(model):
    return [_numpy(w) for w in model.trainable_weights]


@pytest.mark.parametrize("scope", ["global", "variable"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_fit_keeps_weights_integral_and_repeats_bit_for_bit(scope, precision):
    start = _weights(_model())
    first = _fit(keras_zim.ZIM(0.3, scope=scope, precision=precision, seed=3))
    again = _fit(keras_zim.ZIM(0.3, scope=scope, precision=precision, seed=3))
    other = _fit(keras_zim.ZIM(0.3, scope=scope, precision=precision, seed=4))
    assert keras_zim.is_integral(first)
    assert any(np.any(a != b) for a, b in zip(_weights(first), start))
    assert all(np.array_equal(a, b) for a, b in zip(_weights(first), _weights(again)))
    assert any(np.any(a != b) for a, b in zip(_weights(first), _weights(other)))


def _apply(optimizer, gradients, values):
    variables = [keras.Variable(np.asarray(v, "float32")) for v in values]
    optimizer.apply([ops.convert_to_tensor(np.asarray(g, "float32")) for g in gradients], variables)
    return [_numpy(v) for v in variables]


def test_consecutive_steps_draw_different_moves():
    optimizer = keras_zim.ZIM(0.5, trials=200, seed=0)
    w = keras.Variable(np.zeros(50, "float32"))
    g = ops.convert_to_tensor(np.linspace(-1, 1, 50).astype("float32"))
    optimizer.apply([g], [w])
    first = _numpy(w).copy()
    optimizer.apply([g], [w])
    second = _numpy(w) - first
    assert np.any(first != second) and np.all(second == np.round(second))


def test_schedules_callables_and_clipping():
    schedule = keras.optimizers.schedules.ExponentialDecay(5.0, decay_steps=10, decay_rate=1.0)
    (w,) = _apply(keras_zim.ZIM(schedule, trials=4, smoothing=0.0, seed=0), [[0.0, 1.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(w, [0.0, -4.0])  # rate clipped to 1: all 4 trials land on the only mass
    (w,) = _apply(keras_zim.ZIM(lambda: 1.0, trials=3, smoothing=0.0, seed=0), [[-2.0, 0.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(w, [3.0, 0.0])
    for clip in ({"clipnorm": 1e-3}, {"clipvalue": 1e-3}, {"global_clipnorm": 1e-3}):
        # Clipping rescales g; q is scale-free, so with c = 0 the move is unchanged.
        (w,) = _apply(keras_zim.ZIM(1.0, trials=5, smoothing=0.0, seed=0, **clip), [[0.0, -7.0]], [[0.0, 0.0]])
        np.testing.assert_array_equal(w, [0.0, 5.0])


def test_nan_skip_zero_gradient_and_saturation():
    optimizer = keras_zim.ZIM(1.0, trials=10, seed=0)
    (w,) = _apply(optimizer, [[1.0, np.nan]], [[2.0, 3.0]])
    np.testing.assert_array_equal(w, [2.0, 3.0])  # a NaN skips the step
    assert int(_numpy(optimizer.iterations)) == 1
    (w,) = _apply(keras_zim.ZIM(1.0, trials=10, smoothing=0.0, seed=0), [[0.0, 0.0]], [[2.0, 3.0]])
    np.testing.assert_array_equal(w, [2.0, 3.0])  # no direction, no move
    (w,) = _apply(keras_zim.ZIM(1.0, trials=10, smoothing=1.0, seed=0), [[0.0, 0.0]], [[0.0, 0.0]])
    np.testing.assert_array_equal(w, [0.0, 0.0])  # trials land uniformly, but sign(0) = 0 moves nothing
    limit = 2.0**24
    (w,) = _apply(keras_zim.ZIM(1.0, trials=8, smoothing=0.0, seed=0), [[-1.0]], [[limit - 2]])
    np.testing.assert_array_equal(w, [limit])  # saturates at the float32 exact-integer limit


def test_gradient_accumulation_moves_every_second_step():
    model = _model()
    start = _weights(model)
    model.compile(optimizer=keras_zim.ZIM(0.5, seed=0, gradient_accumulation_steps=2), loss="mse", jit_compile=JIT)
    model.train_on_batch(*[a[:16] for a in DATA])
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), start))
    model.train_on_batch(*[a[16:32] for a in DATA])
    assert any(np.any(a != b) for a, b in zip(_weights(model), start))
    assert keras_zim.is_integral(model)


def test_config_round_trip_and_lookup_by_name():
    optimizer = keras_zim.ZIM(0.2, trials=7, smoothing=0.5, scope="variable", unit=0.5, precision="float32x2", seed=9)
    clone = keras_zim.ZIM.from_config(optimizer.get_config())
    assert clone.get_config() == optimizer.get_config()
    assert isinstance(keras.optimizers.get("zim"), keras_zim.ZIM)
    with pytest.raises(ValueError, match="Argument `precision` must be one of"):
        keras_zim.ZIM(precision="float16")


def test_saved_model_continues_exactly(tmp_path):
    model = _fit(keras_zim.ZIM(0.3, seed=5), epochs=1)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(_numpy(loaded.optimizer.iterations)) == int(_numpy(model.optimizer.iterations)) == 3
    for m in (model, loaded):
        m.fit(*DATA, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(_weights(model), _weights(loaded)))


@pytest.mark.skipif(BACKEND == "tensorflow", reason="Keras has no stateless_apply on TensorFlow")
def test_stateless_apply_is_pure_and_steps_differ():
    # Under JAX's jit the optimizer is stateless: the step's seed must come
    # from the `iterations` it is handed, so threading the returned state gives
    # new moves, and the same state gives the same moves.
    optimizer = keras_zim.ZIM(0.5, trials=200, seed=0)
    w = keras.Variable(np.zeros(50, "float32"))
    optimizer.build([w])
    gradients = [ops.convert_to_tensor(np.linspace(-1, 1, 50).astype("float32"))]
    step = optimizer.stateless_apply
    if BACKEND == "jax":
        import jax

        step = jax.jit(step)
    state = [v.value for v in optimizer.variables]
    first, after = step(state, gradients, [w.value])
    second, _ = step(after, gradients, first)
    again, _ = step(state, gradients, [w.value])
    moves = [_numpy(first[0]), _numpy(second[0]) - _numpy(first[0])]
    assert np.any(moves[0] != moves[1]) and np.all(moves[1] == np.round(moves[1]))
    np.testing.assert_array_equal(_numpy(again[0]), moves[0])


# ------------------------------------------------- the dense uniform share


def _fmix32(x):
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(factor)) & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(16))


def test_hash32_is_the_reference_bijection_with_balanced_bits():
    # Every backend's hash32 is the same function (two keyed rounds of
    # MurmurHash3's finaliser, as written here in NumPy); over 2**16
    # consecutive counters it is injective and each of its 32 bits is 1 with
    # probability 1/2 (binomial central intervals holding all but P_MIN / 32).
    key = np.array([0x12345678, -0x789ABC], np.int32)
    counters = np.arange(1 << 16, dtype=np.int32)
    words = _numpy(backend.hash32(ops.convert_to_tensor(counters), ops.convert_to_tensor(key))).view(np.uint32)
    k = key.view(np.uint32).astype(np.uint64)
    expected = _fmix32((_fmix32(counters.astype(np.uint64) ^ k[0]) + k[1]) & np.uint64(0xFFFFFFFF))
    np.testing.assert_array_equal(words, expected.astype(np.uint32))
    assert len(np.unique(words)) == len(counters)
    low, high = binomial_interval(len(counters), 0.5, P_MIN / 32)
    ones = [int((words >> np.uint32(bit) & 1).sum()) for bit in range(32)]
    assert low <= min(ones) and max(ones) <= high


# The dense pass is float64 only: without float64 (JAX's default) the same
# tests check that the float32x2 draw keeps the law without it.
DENSE_PRECISION, DENSE_DTYPE = ("float64", np.float64) if backend.has_float64() else ("float32x2", np.float32)
_DENSE = backend.jit(
    lambda magnitudes, seed, layout, trials, rates, hint: sampling.draw_counts(
        magnitudes, layout, list(trials), ops.convert_to_tensor(np.asarray(rates, DENSE_DTYPE)), 1.0, seed,
        [sampling.chunk_size(max(trials), max(rates))] * len(layout.groups), 64, precision=DENSE_PRECISION,
        rate_hint=hint,
    ),
    static_argnames=("layout", "trials", "rates", "hint"),
)


def _dense_counts(magnitudes, seed, layout, trials, rates, hint):
    magnitudes = np.asarray(magnitudes, DENSE_DTYPE)
    args = (ops.convert_to_tensor(magnitudes), ops.convert_to_tensor(np.asarray(seed, np.int32)))
    static = dict(layout=layout, trials=tuple(trials), rates=tuple(rates), hint=hint)
    return _numpy(_DENSE(*args, **static))


def _spy_on_the_dense_pass(monkeypatch):
    from keras_zim import uniform_share

    calls = []
    place = uniform_share.place
    monkeypatch.setattr(uniform_share, "place", lambda *args: calls.append(1) or place(*args))
    return calls


@pytest.mark.parametrize("forced", ["every M > U redrawn one by one", "blocks past their fast slots"])
def test_dense_uniform_share_keeps_the_joint_law(monkeypatch, forced):
    # Rows of 9 and of 8 cells, n = 3, r = 0.6, c = 1, through the dense pass
    # (its thresholds lowered so that it runs here): lambda = U + 2, so the
    # common mean is 2/9 per cell (the least over the rows, U = 0), M > U and
    # the fallback are common; in the second case one fast slot a block (so
    # blocks past it, and their one-by-one trials, are common). The 9-cell
    # rows end in a partial block. Joint pmf of each row by chi-square.
    from keras_zim import uniform_share

    calls = _spy_on_the_dense_pass(monkeypatch)
    monkeypatch.setattr(uniform_share, "MIN_CELLS", 1)
    monkeypatch.setattr(uniform_share, "SPARE", (0.0, -2.0))
    if forced == "blocks past their fast slots":
        monkeypatch.setattr(uniform_share, "FAST_SLOTS", 1)
    rows = 4000 if forced == "blocks past their fast slots" and not JIT else 10_000
    nine, eight = np.array([0.0, 0.5, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.0]), np.array([0.2, 0, 0, 0, 0.3, 0, 0, 0])
    layout = sampling.Segments([(0, rows, 9), (9 * rows, rows, 8)])
    magnitudes = np.concatenate([np.tile(nine, rows), np.tile(eight, rows)])
    counts = _dense_counts(magnitudes, [7, len(forced)], layout, [3] * (2 * rows), [0.6] * (2 * rows), 0.6)
    assert bool(calls) == (DENSE_PRECISION == "float64")
    for w, cells in ((nine, counts[: 9 * rows].reshape(rows, 9)), (eight, counts[9 * rows :].reshape(rows, 8))):
        q = (w + 1.0) / (w.sum() + len(w))
        assert chisquare_pvalue(joint_counts(cells, 3), zim_pmf(outcomes(3, len(w)), 3, 0.6, q)) > P_MIN


def test_dense_uniform_share_at_the_defaults(monkeypatch):
    # ZIM's defaults on one segment of 2**17 + 3 cells, g = 0, c = 1 (every
    # trial uniform), 24 draws, unpatched: the dense pass runs (spied on);
    # each total is Binomial(n, r); over all draws the counts of single cells,
    # of aligned blocks of 8 and of blocks of 8 straddling two, and of the
    # last 3 cells (the partial block), each follow their Binomial marginal
    # (chi-square of the pooled histograms: cells of one draw are negatively
    # associated, which makes the test conservative, never more severe).
    calls = _spy_on_the_dense_pass(monkeypatch)
    d, r, draws = (1 << 17) + 3, 0.1, 24
    layout = sampling.Segments([(0, 1, d)])
    counts = np.stack([_dense_counts(np.zeros(d), [5, k], layout, [d], [r], r) for k in range(draws)])
    assert bool(calls) == (DENSE_PRECISION == "float64")
    low, high = binomial_interval(d, r, P_MIN / draws)
    assert all(low <= total <= high for total in counts.sum(axis=1))
    whole = d // 8 * 8
    for values, width in ((counts[:, :whole], 1), (counts[:, :whole].reshape(draws, -1, 8).sum(axis=2), 8),
                          (counts[:, 4 : whole - 4].reshape(draws, -1, 8).sum(axis=2), 8)):
        support = np.arange(12)
        observed = np.bincount(values.ravel(), minlength=12)[:12]
        expected = stats.binom.pmf(support, d, r * width / d)
        assert observed.sum() == values.size
        assert chisquare_pvalue(observed, expected / expected.sum()) > P_MIN
    low, high = binomial_interval(draws * d, 3 * r / d)
    assert low <= counts[:, whole:].sum() <= high


def test_dense_uniform_share_of_groups_of_several_sizes(monkeypatch):
    # The variable scope's layout at the defaults: 3 segments of 2**15 cells
    # and one of 2**17 + 3, n = d each, r = 0.1, g = 0, c = 1, 16 draws; one
    # pass at one mean per cell for both groups (spied on). Each segment's
    # total is Binomial(n, r); each group's single cells and aligned blocks of
    # 8 follow their Binomial marginals (pooled chi-square, as above).
    calls = _spy_on_the_dense_pass(monkeypatch)
    small, large, r, draws = 1 << 15, (1 << 17) + 3, 0.1, 16
    layout = sampling.Segments([(0, 3, small), (3 * small, 1, large)])
    sizes = [small] * 3 + [large]
    counts = np.stack([_dense_counts(np.zeros(sum(sizes)), [6, k], layout, sizes, [r] * 4, r) for k in range(draws)])
    assert bool(calls) == (DENSE_PRECISION == "float64")
    ends = np.cumsum(sizes)
    for d, segment in zip(sizes, np.split(counts, ends[:-1], axis=1)):
        low, high = binomial_interval(d, r, P_MIN / (draws * len(sizes)))
        assert all(low <= total <= high for total in segment.sum(axis=1))
    for d, cells in ((small, counts[:, : 3 * small]), (large, counts[:, 3 * small : 3 * small + large // 8 * 8])):
        for values, width in ((cells, 1), (cells.reshape(draws, -1, 8).sum(axis=2), 8)):
            support = np.arange(12)
            observed = np.bincount(values.ravel(), minlength=12)[:12]
            expected = stats.binom.pmf(support, d, r * width / d)
            assert observed.sum() == values.size
            assert chisquare_pvalue(observed, expected / expected.sum()) > P_MIN


def test_fast_slots_leave_a_block_past_them_in_about_one_draw_in_a_hundred():
    # The fewest slots k with blocks * P(Poisson(8 mu) > k) <= RARE_PASSES,
    # from scipy's Poisson tail; at most FAST_SLOTS (4-bit counts), and the
    # mean capped at the most the pass runs at (BLOCK_RATE a block).
    from keras_zim import uniform_share

    rare = uniform_share.RARE_PASSES
    for mean, blocks in ((0.0994, 848_768), (0.0994, 3_200_000), (0.05, 1 << 17), (0.25, 1 << 20), (0.4, 1 << 20)):
        k = uniform_share.fast_slots(mean, blocks)
        rate = min(8 * mean, uniform_share.BLOCK_RATE)
        assert blocks * stats.poisson.sf(k, rate) <= rare < blocks * stats.poisson.sf(k - 1, rate)
        assert 1 <= k <= uniform_share.FAST_SLOTS
    assert uniform_share.fast_slots(0.0994, 848_768) == 10  # the Transformer's global scope at the defaults
    assert uniform_share.fast_slots(0.25, 1 << 40) == uniform_share.FAST_SLOTS


def test_plan_of_the_pass_leaves_out_groups_that_would_lower_the_mean_for_the_rest():
    # One pass serves every dense group at the least lambda/d of its segments.
    # ResNet-50's 6 kernels of 16,384 cells beside 3 of 2,359,296: at r = 0.1
    # the small ones would lower the mean by 10% for 7 million cells, so they
    # are left to the one-by-one placement; the global scope (one group) keeps
    # its own mean, and the static slots cover what the pass leaves.
    from keras_zim import uniform_share

    def own(d):
        u = 0.1 * d
        return (u - 4.0 * np.sqrt(u) - 16.0) / d

    small, large = 1 << 14, 2359296
    dense, mean = uniform_share.plan([([small] * 6, 6, small), ([large] * 3, 3, large)], 0.1)
    assert dense == [False, True] and mean == pytest.approx(own(large))
    dense, mean = uniform_share.plan([([large], 1, large)], 0.1)
    assert dense == [True] and mean == pytest.approx(own(large))
    dense, mean = uniform_share.plan([([small] * 40, 40, small), ([1 << 15] * 4, 4, 1 << 15)], 0.1)
    assert dense == [True, True] and mean == pytest.approx(own(small))
    assert uniform_share.plan([([100], 1, 100)], 0.1) == ([False], None)  # too small to pay
    expected_left = 0.1 * large - own(small) * large  # E[U - M] at the small segments' mean
    assert uniform_share.left_over(large, 0.1, large, own(small)) >= expected_left > 10 * uniform_share.left_over(
        large, 0.1, large, own(large))

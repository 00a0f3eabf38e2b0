"""Tests of `keras_zim.initializers.Discrete`: integer kernels from multinomial counts.

`w = sign(w0) * x` with `x ~ Multinomial(m, (|w0| + c) / (||w0||_1 + c size))`
(`draw="kernel"`), or one such draw per output unit (`draw="unit"`).
The statistical tests use a base whose draw `w0` is known and a chi-square
goodness of fit with p-value threshold `P_MIN = 1e-4` (fixed seeds).
"""

import random

import keras
import numpy as np
import pytest
from scipy import stats

from keras_zim.initializers import Discrete

P_MIN = 1e-4

# A known base draw with one exact zero (sign 0: trials landing there are hidden).
W0 = np.array([[0.5, -1.0, 2.0], [-3.0, 0.25, 1.5], [0.0, -0.75, 4.0], [1.0, -2.0, 0.1]])


class Fixed(keras.initializers.Initializer):
    """A base initialiser that always returns `W0`."""

    def __call__(self, shape, dtype=None):
        return keras.ops.convert_to_tensor(W0.reshape(shape), dtype=dtype)


@pytest.mark.parametrize("smoothing", [0.0, 0.5])
def test_counts_follow_the_base_magnitudes(smoothing):
    # With smoothing 0 the zero entry gets no trials at all.
    trials = 60_000
    w = Discrete(Fixed(), trials=trials, smoothing=smoothing, seed=7)(W0.shape).numpy()
    assert np.all(w == np.round(w))
    moved = w != 0
    np.testing.assert_array_equal(np.sign(w[moved]), np.sign(W0[moved]))
    assert w[W0 == 0] == 0
    hidden = trials - np.abs(w).sum()  # the trials that landed on the zero entry
    if smoothing == 0:
        assert hidden == 0
    observed = np.append(np.abs(w[W0 != 0]), hidden)
    mass = np.append(np.abs(W0[W0 != 0]), 0.0) + smoothing
    keep = mass > 0  # every expected count is then >= 60,000 * 0.1 / 16.35 = 367
    expected = trials * mass[keep] / mass.sum()
    assert stats.chisquare(observed[keep], expected).pvalue > P_MIN


@pytest.mark.parametrize(
    "shape, trials, expected",
    [
        ((784, 128), None, 317),  # round(100352 ** (1 / 2)) = round(316.78)
        ((3, 3, 1, 8), None, 3),  # round(72 ** (1 / 4)) = round(2.91)
        ((4, 5), None, 4),  # round(20 ** (1 / 2)) = round(4.47)
        ((4, 5), 7, 7),
    ],
)
def test_every_trial_lands_on_a_glorot_weight(shape, trials, expected):
    # Rate 1: all m trials pass; glorot_uniform draws no exact zero (checked),
    # so none is hidden by sign(0) and sum(|w|) == m exactly.
    w = Discrete(trials=trials, seed=3)(shape).numpy()
    w0 = keras.initializers.GlorotUniform(seed=3)(shape, dtype="float32").numpy()
    assert w.shape == shape
    assert np.all(w0 != 0)
    assert np.all(w == np.round(w))
    assert np.abs(w).sum() == expected
    moved = w != 0
    np.testing.assert_array_equal(np.sign(w[moved]), np.sign(w0[moved]))


@pytest.mark.parametrize(
    "shape, trials, per_unit",
    [
        ((3, 3, 16, 8), None, 144),  # a conv kernel: fan_in = 3 * 3 * 16
        ((1, 1, 32, 64), None, 32),
        ((5, 4), None, 5),  # a dense kernel: fan_in = 5 per output column
        ((5, 4), 9, 9),
        ((7,), None, 7),  # a vector is one unit
    ],
)
def test_unit_draw_gives_every_output_unit_its_trials(shape, trials, per_unit):
    # Rate 1 and a Glorot base without exact zeros: every trial of unit j lands
    # on one of its own entries and shows, so sum(|w[..., j]|) == m for every j,
    # and in particular no output unit is all zero.
    w = Discrete(trials=trials, seed=3, draw="unit")(shape).numpy()
    w0 = keras.initializers.GlorotUniform(seed=3)(shape, dtype="float32").numpy()
    assert w.shape == shape and np.all(w0 != 0)
    assert np.all(w == np.round(w))
    units = np.abs(w).reshape(-1, shape[-1] if len(shape) > 1 else 1).sum(axis=0)
    np.testing.assert_array_equal(units, per_unit)
    moved = w != 0
    np.testing.assert_array_equal(np.sign(w[moved]), np.sign(w0[moved]))


def test_the_paper_rule_leaves_most_conv_channels_all_zero():
    # Why convolutions use draw="unit": round(2304 ** (1 / 4)) = 7 trials cannot
    # reach more than 7 of a 3x3x16x16 kernel's 16 output channels.
    w = Discrete(seed=0)((3, 3, 16, 16)).numpy()
    assert np.abs(w).sum() == 7
    assert np.sum(np.abs(w).reshape(-1, 16).sum(axis=0) == 0) >= 9
    unit = Discrete(seed=0, draw="unit")((3, 3, 16, 16)).numpy()
    assert np.all(np.abs(unit).reshape(-1, 16).sum(axis=0) == 144)


def test_unit_counts_follow_each_units_magnitudes():
    # Each column of W0 is its own multinomial of `trials` draws over its 4
    # entries: a chi-square fit per column (the zero entry of column 0 hides
    # its share, recovered as trials - sum |w|). Smallest expected count:
    # 20,000 * 1.1 / 11.6 = 1,897 (column 2: |W0| + c = 3, 2.5, 5, 1.1).
    trials, smoothing = 20_000, 1.0
    w = Discrete(Fixed(), trials=trials, smoothing=smoothing, seed=11, draw="unit")(W0.shape).numpy()
    assert np.all(w == np.round(w))
    for j in range(W0.shape[1]):
        observed = np.abs(w[:, j])
        observed[W0[:, j] == 0] = trials - observed.sum()
        mass = np.abs(W0[:, j]) + smoothing
        assert stats.chisquare(observed, trials * mass / mass.sum()).pvalue > P_MIN


@pytest.mark.parametrize("seed, shape, trials", [(22, (128, 10), 36), (33, (64, 10), 25), (22, (1568, 10), 125)])
def test_draws_where_every_trial_passes_at_once(seed, shape, trials):
    # These seeds send all m trials through the sampler's uniform stage in one
    # go, where a gap search target can reach its tree total: op by op that
    # once gathered out of range (InvalidArgumentError). The sampler now keeps
    # such targets in range (test_sampling.py,
    # test_targets_at_or_past_the_total_stay_in_range_op_by_op).
    w = Discrete(seed=seed)(shape).numpy()
    assert np.all(w == np.round(w)) and np.abs(w).sum() == trials


@pytest.mark.parametrize(
    "dtype, expected", [(None, "float32"), ("float32", "float32"), ("float64", "float64")]
)
def test_integer_values_in_the_requested_dtype(dtype, expected):
    w = Discrete(seed=1)((4, 5), dtype=dtype)
    assert keras.backend.standardize_dtype(w.dtype) == expected
    w = np.asarray(w)
    assert np.all(w == np.round(w)) and np.abs(w).sum() == 4


def test_a_seed_makes_it_deterministic():
    first = Discrete(seed=5)((784, 128)).numpy()
    init = Discrete(seed=5)
    np.testing.assert_array_equal(first, init((784, 128)).numpy())
    np.testing.assert_array_equal(first, init((784, 128)).numpy())  # same on every call
    assert np.any(first != Discrete(seed=6)((784, 128)).numpy())


def test_without_a_seed_every_call_differs():
    random.seed(0)  # the unseeded draw takes its seed from Python's `random`
    init = Discrete()
    assert np.any(init((784, 128)).numpy() != init((784, 128)).numpy())


@pytest.mark.parametrize(
    "base, smoothing, sign, total",
    [
        ("ones", 1.0, 1.0, 7),
        (keras.initializers.Constant(-2.0), 1.0, -1.0, 7),
        ("zeros", 1.0, 0.0, 0),  # trials land, but sign(0) = 0 hides them
        ("zeros", 0.0, 0.0, 0),  # no mass at all: zero counts, no NaN
    ],
)
def test_constant_bases(base, smoothing, sign, total):
    w = Discrete(base, trials=7, smoothing=smoothing, seed=2)((4, 5)).numpy()
    assert np.all(np.isfinite(w))
    assert np.all(w * sign >= 0) and np.all(w[w != 0] * sign > 0)
    assert np.abs(w).sum() == total


@pytest.mark.parametrize("draw", ["kernel", "unit"])
def test_config_round_trip(draw):
    init = Discrete(base="he_normal", trials=7, smoothing=0.0, seed=4, draw=draw)
    config = init.get_config()
    assert config["trials"] == 7 and config["smoothing"] == 0.0 and config["seed"] == 4
    assert config["draw"] == draw
    clone = Discrete.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.base, keras.initializers.HeNormal)
    np.testing.assert_array_equal(clone((4, 5)).numpy(), init((4, 5)).numpy())


def test_a_config_without_draw_keeps_the_paper_rule():
    # Configs saved before `draw` existed load with the paper's rule.
    config = Discrete(trials=7, seed=4).get_config()
    del config["draw"]
    assert Discrete.from_config(config).draw == "kernel"


def test_serialize_deserialize_and_get_with_the_registered_name():
    init = Discrete(base="ones", trials=7, smoothing=0.25, seed=4)
    serialized = keras.initializers.serialize(init)
    assert serialized["registered_name"] == "keras_zim>Discrete"
    for clone in [keras.initializers.deserialize(serialized), keras.initializers.get(serialized)]:
        assert isinstance(clone, Discrete)
        assert clone.get_config() == init.get_config()


def test_get_by_name_alone():
    assert isinstance(keras.initializers.get("keras_zim>Discrete"), Discrete)


def test_dense_layer_gets_an_integer_kernel():
    layer = keras.layers.Dense(5, kernel_initializer=Discrete(seed=1))
    layer.build((None, 4))
    kernel = layer.kernel.numpy()
    assert np.all(kernel == np.round(kernel)) and np.abs(kernel).sum() == 4
    assert not layer.bias.numpy().any()
    # The layer's config carries the initialiser, seed included.
    clone = keras.layers.Dense.from_config(layer.get_config())
    assert isinstance(clone.kernel_initializer, Discrete)
    clone.build((None, 4))
    np.testing.assert_array_equal(clone.kernel.numpy(), kernel)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(trials=0), "trials"),
        (dict(trials=-3), "trials"),
        (dict(trials=2.5), "trials"),
        (dict(trials=True), "trials"),
        (dict(trials="3"), "trials"),
        (dict(smoothing=-1.0), "smoothing"),
        (dict(smoothing=float("nan")), "smoothing"),
        (dict(smoothing=float("inf")), "smoothing"),
        (dict(smoothing="a"), "smoothing"),
        (dict(seed=1.5), "seed"),
        (dict(seed="0"), "seed"),
        (dict(seed=True), "seed"),
        (dict(draw="units"), "draw"),
        (dict(draw="paper"), "draw"),
        (dict(draw=None), "draw"),
        (dict(draw=1), "draw"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"Argument `{argument}` .* Received: {argument}="):
        Discrete(**kwargs)


def test_unknown_base_raises():
    with pytest.raises(ValueError, match="no_such_initializer"):
        Discrete(base="no_such_initializer")


def test_bad_draw_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"Argument `draw` must be one of \('kernel', 'unit'\)\. Received: draw='fan_in'"):
        Discrete(draw="fan_in")


# --- a bounded range -------------------------------------------------------


@pytest.mark.parametrize("low, high", [(-1, 1), (-7, 7), (None, 0), (0, None), (-2.0, 5.0)])
def test_a_range_clips_the_same_draw(low, high):
    # trials=40 on 12 entries: counts of 2 and more occur, so the clip acts.
    unbounded = Discrete(Fixed(), trials=40, seed=3)(W0.shape).numpy()
    bounded = Discrete(Fixed(), trials=40, seed=3, low=low, high=high)(W0.shape).numpy()
    np.testing.assert_array_equal(bounded, np.clip(unbounded, low, high))
    assert (low is None or bounded.min() >= low) and (high is None or bounded.max() <= high)
    assert not np.array_equal(bounded, unbounded) or (low, high) == (-7, 7)


def test_ternary_unit_draw_for_a_conv_kernel():
    kernel = Discrete(seed=0, draw="unit", low=-1, high=1)((3, 3, 8, 4)).numpy()
    assert set(np.unique(kernel).tolist()) == {-1.0, 0.0, 1.0}
    assert np.all(np.abs(kernel).sum(axis=(0, 1, 2)) > 0)  # every output unit is live


def test_range_in_the_config():
    initializer = Discrete(seed=1, low=-7, high=7)
    config = initializer.get_config()
    assert (config["low"], config["high"]) == (-7, 7)
    assert Discrete.from_config(config).get_config() == config
    assert (Discrete.from_config({"seed": 1}).low, Discrete.from_config({"seed": 1}).high) == (None, None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(low=1, high=1), "low < high. Received: low=1, high=1"),
        (dict(low=3, high=-3), "low < high"),
        (dict(low=0.5), "Argument `low` must be a whole number. Received: low=0.5"),
        (dict(high="7"), "Argument `high` must be a whole number. Received: high='7'"),
        (dict(high=True), "Argument `high` must be a whole number"),
    ],
)
def test_bad_ranges_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Discrete(**kwargs)


def test_a_range_wider_than_the_dtype_holds_is_refused():
    Discrete(Fixed(), low=-256, high=256)(W0.shape, dtype="bfloat16")
    with pytest.raises(ValueError, match="wider than bfloat16 holds exactly"):
        Discrete(Fixed(), low=-300, high=300)(W0.shape, dtype="bfloat16")

"""Tests of keras_zim.constraints: bounded integer grids kept through training.

The MirroredStrategy test runs this file as a script in a child process:
logical devices must be configured before TensorFlow initialises them.
"""

import json
import sys

import children
import keras
import numpy as np
import pytest
import tensorflow as tf
import toy
from scipy import stats

import keras_zim
from keras_zim import constraints

P_MIN = 1e-4  # p-value threshold of the chi-square tests (fixed seeds)


def test_clips_into_the_range_in_units():
    values = np.array([-9.0, -7.0, 0.0, 3.0, 7.0, 8.0], "float32")
    np.testing.assert_array_equal(constraints.IntegerRange(-7, 7)(values), [-7, -7, 0, 3, 7, 7])
    np.testing.assert_array_equal(constraints.Ternary()(values), [-1, -1, 0, 1, 1, 1])
    halves = constraints.IntegerRange(-2, 3, unit=0.5)(np.array([-5.0, 0.5, 1.5, 9.0], "float32"))
    np.testing.assert_array_equal(halves, [-1.0, 0.5, 1.5, 1.5])
    # It clips, it never rounds: an off-grid value inside the range stays as it is.
    np.testing.assert_array_equal(constraints.IntegerRange(-7, 7)(np.array([0.25], "float32")), [0.25])
    # Whole-valued floats and NumPy integers are accepted as bounds.
    assert constraints.IntegerRange(np.int64(-3), 4.0).get_config() == {"low": -3, "high": 4, "unit": 1.0}


@pytest.mark.parametrize(
    "constraint", [constraints.IntegerRange(-7, 7), constraints.IntegerRange(0, 3, unit=0.25), constraints.Ternary(0.5)]
)
def test_config_and_public_lookup_paths(constraint):
    config = constraint.get_config()
    assert type(constraint).from_config(config).get_config() == config
    for copy in (
        keras.constraints.deserialize(keras.constraints.serialize(constraint)),
        keras.constraints.get(keras.constraints.serialize(constraint)),
    ):
        assert type(copy) is type(constraint) and copy.get_config() == config


def test_keras_file_keeps_the_constraint_and_a_resumed_run_keeps_the_range(tmp_path):
    model = _model(constraints.IntegerRange(-2, 2))
    _fit(model, keras_zim.ZIM(learning_rate=1.0, seed=0), epochs=1)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    constraint = loaded.layers[0].kernel.constraint
    assert isinstance(constraint, constraints.IntegerRange) and (constraint.low, constraint.high) == (-2, 2)
    x, y = toy.data()
    loaded.fit(x, y, batch_size=16, epochs=2, verbose=0)  # the restored ZIM, the restored constraint
    _assert_in_range(loaded, -2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(low=1, high=1), "low < high. Received: low=1, high=1"),
        (dict(low=2, high=-2), "low < high. Received: low=2, high=-2"),
        (dict(low=-1.5, high=1), "Argument `low` must be a whole number. Received: low=-1.5"),
        (dict(low=-1, high=float("inf")), "Argument `high` must be a whole number. Received: high=inf"),
        (dict(low=-1, high=float("nan")), "Argument `high` must be a whole number"),
        (dict(low=True, high=2), "Argument `low` must be a whole number. Received: low=True"),
        (dict(low="-1", high=2), "Argument `low` must be a whole number. Received: low='-1'"),
        (dict(low=None, high=2), "Argument `low` must be a whole number. Received: low=None"),
        (dict(low=-(2**60), high=0), "Argument `low` must be at most 2\\*\\*53 in magnitude"),
        (dict(low=-1, high=1, unit=0), "Argument `unit` must be a positive power of two .*Received: unit=0"),
        (dict(low=-1, high=1, unit=0.1), "Argument `unit` must be a positive power of two"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        constraints.IntegerRange(**kwargs)


def test_ternary_refuses_a_bad_unit():
    with pytest.raises(ValueError, match="Argument `unit` must be a positive power of two .*Received: unit=3"):
        constraints.Ternary(3)


def test_a_range_wider_than_the_dtype_holds_is_refused_when_applied():
    # bfloat16 holds every integer up to 2**8 = 256, float16 up to 2**11 = 2048.
    constraints.IntegerRange(-256, 256)(np.zeros(2, "bfloat16"))
    with pytest.raises(ValueError, match=r"\[-257, 257\] is wider than bfloat16 holds exactly"):
        constraints.IntegerRange(-257, 257)(np.zeros(2, "bfloat16"))
    constraints.IntegerRange(-2048, 2048)(np.zeros(2, "float16"))
    with pytest.raises(ValueError, match="wider than float16"):
        constraints.IntegerRange(0, 2049)(np.zeros(2, "float16"))
    with pytest.raises(ValueError, match="wider than float32"):
        constraints.IntegerRange(0, 2**24 + 1)(np.zeros(2, "float32"))
    with pytest.raises(ValueError, match="needs a float dtype"):
        constraints.IntegerRange(-1, 1)(np.zeros(2, "int32"))


# --- integer widths ------------------------------------------------------


@pytest.mark.parametrize(
    "low, high, bits",
    [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-2, 1, 2), (-128, 127, 8), (-129, 0, 9), (0, 128, 9), (-(2**31), 2**31 - 1, 32)],
)
def test_signed_bits(low, high, bits):
    assert constraints.signed_bits(low, high) == bits


def test_signed_bits_refuses_an_empty_range_and_non_integers():
    with pytest.raises(ValueError, match="low <= high"):
        constraints.signed_bits(1, 0)
    assert constraints.signed_bits(np.int8(-3), np.int64(3)) == 3
    assert constraints.signed_bits(-37.0, np.float32(20.0)) == 7  # whole-valued floats are fine
    for low, high in [(0.5, 1), (0, "1"), (True, 1), (float("-inf"), 0), (0, float("nan"))]:
        with pytest.raises(ValueError, match="must be a whole number"):
            constraints.signed_bits(low, high)


# --- training --------------------------------------------------------------


def _model(constraint, dtype=None):
    model = toy.integer_model()
    clone = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, "relu", kernel_constraint=constraint, bias_constraint=constraint, dtype=dtype),
            keras.layers.Dense(3, kernel_constraint=constraint, bias_constraint=constraint, dtype=dtype),
            keras.layers.LayerNormalization(center=False, scale=False),
        ]
    )
    clone.set_weights([np.clip(w, constraint.low, constraint.high) * constraint.unit for w in model.get_weights()])
    return clone


def _fit(model, optimizer, epochs=3, **compile_kwargs):
    x, y = toy.data()
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
    return model.fit(x, y, batch_size=16, epochs=epochs, verbose=0).history


def _assert_in_range(model, low, high, unit=1.0):
    trainable = [np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in model.layers[0].trainable_weights]
    trainable += [np.asarray(keras.ops.convert_to_numpy(w), np.float64) for w in model.layers[1].trainable_weights]
    assert keras_zim.is_integral(trainable, unit=unit)
    units = np.concatenate([w.ravel() for w in trainable]) / unit
    assert units.min() >= low and units.max() <= high
    return units


@pytest.mark.parametrize("scope, jit_compile", [("global", True), ("variable", False)])
def test_training_keeps_weights_on_the_bounded_grid(scope, jit_compile):
    # r = 1 with n = d trials: about one unit per weight per step, 12 steps, so
    # without the bound many weights would leave [-1, 1].
    model = _model(constraints.Ternary())
    _fit(model, keras_zim.ZIM(learning_rate=1.0, scope=scope, seed=1), jit_compile=jit_compile)
    units = _assert_in_range(model, -1, 1)
    assert np.mean(np.abs(units) == 1) > 0.3  # many at the bound
    if scope == "global":  # the same run unbounded leaves [-1, 1]: the clip was needed
        unbounded = toy.integer_model()
        _fit(unbounded, keras_zim.ZIM(learning_rate=1.0, scope=scope, seed=1), jit_compile=jit_compile)
        assert max(np.abs(w).max() for w in unbounded.get_weights()) > 1


def test_mixed_precision_and_a_unit_keep_the_bounded_grid():
    previous = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model(constraints.IntegerRange(-3, 3, unit=0.5))
        optimizer = keras.optimizers.LossScaleOptimizer(keras_zim.ZIM(learning_rate=1.0, unit=0.5, seed=2))
        _fit(model, optimizer)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    units = _assert_in_range(model, -3, 3, unit=0.5)
    assert np.any(np.abs(units) == 3)


# --- the projected step, against the rule -----------------------------------


class _Pair(keras.layers.Layer):
    def __init__(self, constraint):
        super().__init__()
        self.w = self.add_weight(shape=(2,), initializer="zeros", constraint=constraint)


def _projected_steps(gradient, start, steps, **zim_kwargs):
    layer = _Pair(constraints.IntegerRange(-2, 2))
    optimizer = keras_zim.ZIM(smoothing=0.0, seed=5, **zim_kwargs)
    ends = []
    for _ in range(steps):
        layer.w.assign(start)
        optimizer.apply([tf.constant(gradient, tf.float32)], [layer.w])
        ends.append(keras.ops.convert_to_numpy(layer.w).copy())
    return np.array(ends)


def test_one_step_at_the_bound_pushing_outward_is_cut_at_the_bound():
    # r = 1, c = 0: all 5 trials land on entry 0 (q = (1, 0)) and push it up from
    # the bound 2: unbounded it would reach 7; projected it stays at 2.
    ends = _projected_steps([-1.0, 0.0], [2.0, 0.0], steps=3, learning_rate=1.0, trials=5)
    np.testing.assert_array_equal(ends, [[2.0, 0.0]] * 3)


def test_one_step_at_the_bound_pushing_inward_is_the_rule_cut_at_the_far_bound():
    # From w = 2 with g = (1, 0), c = 0: x_0 ~ Binomial(3, r) and w' = max(2 - x_0, -2).
    # Here 3 units never reach -2, so w' = 2 - x_0 exactly; with r = 1 and 5 trials
    # every step would move 5 units and is cut at -2.
    ends = _projected_steps([1.0, 0.0], [2.0, 0.0], steps=600, learning_rate=0.5, trials=3)
    assert np.all(ends[:, 1] == 0)
    observed = np.array([np.sum(ends[:, 0] == 2 - k) for k in range(4)])
    assert observed.sum() == 600
    expected = 600 * stats.binom.pmf(np.arange(4), 3, 0.5)  # >= 75 per cell
    assert stats.chisquare(observed, expected).pvalue > P_MIN
    np.testing.assert_array_equal(
        _projected_steps([1.0, 0.0], [2.0, 0.0], steps=2, learning_rate=1.0, trials=5), [[-2.0, 0.0]] * 2
    )


# --- MirroredStrategy --------------------------------------------------------


def _mirrored_child(out):
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    # Integer data, MSE over 4 * 16 entries: gradients exact in float32, so the
    # all-reduced gradient of two replicas is the one-device gradient bit for bit.
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(64, 8)).astype("float32")
    y = rng.integers(-3, 4, size=(64, 4)).astype("float32")

    def build():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, kernel_constraint=constraints.Ternary())])
        model.set_weights([np.random.default_rng(1).integers(-1, 2, (8, 4)).astype("float32"), np.zeros(4, "float32")])
        model.compile(optimizer=keras_zim.ZIM(learning_rate=1.0, seed=3), loss="mse")
        return model

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = build()
    steps = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            copies = [c.numpy() for c in strategy.experimental_local_results(two.layers[0].kernel.value)]
            steps.append({"kernels": [c.tolist() for c in copies]})

    two.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[Record()])
    one = build()
    one.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    with open(out, "w") as stream:
        json.dump({"replicas": strategy.num_replicas_in_sync, "steps": steps,
                   "one": keras.ops.convert_to_numpy(one.layers[0].kernel).tolist()}, stream)


def test_mirrored_replicas_keep_the_bounded_grid_and_agree(tmp_path):
    out = tmp_path / "mirrored.json"
    children.finish([children.start(__file__, "mirrored", out)])
    result = json.loads(out.read_text())
    assert result["replicas"] == 2 and len(result["steps"]) == 8
    for step in result["steps"]:
        first, second = (np.array(k) for k in step["kernels"])
        np.testing.assert_array_equal(first, second)
        assert set(np.unique(first).tolist()) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(result["steps"][-1]["kernels"][0], result["one"])
    assert not np.array_equal(result["steps"][0]["kernels"][0], result["steps"][-1]["kernels"][0])


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        _mirrored_child(sys.argv[2])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

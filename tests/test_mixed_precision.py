"""ZIM under mixed precision, and saturation at each dtype's exact-integer limit."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import toy

import keras_zim
from keras_zim.callbacks import ZIMMonitor


@pytest.fixture
def policy():
    """Sets a global dtype policy for one test and restores the previous one."""
    previous = keras.config.dtype_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def _train(model, optimizer, epochs=3):
    x, y = toy.data()
    before = model.get_weights()
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=[ZIMMonitor()]).history
    moved = sum(np.abs(a - b).sum() for a, b in zip(before, model.get_weights()))
    return history, moved


def test_mixed_float16_with_loss_scaling_keeps_exact_integers(policy):
    # (Given a bare ZIM under this policy, Keras wraps it in a
    # LossScaleOptimizer itself.)
    policy("mixed_float16")
    model = toy.integer_model()
    assert model.layers[0].compute_dtype == "float16" and model.layers[0].kernel.dtype == "float32"
    history, moved = _train(model, keras.optimizers.LossScaleOptimizer(keras_zim.ZIM(learning_rate=0.3, seed=0)))
    assert isinstance(model.optimizer.inner_optimizer, keras_zim.ZIM)
    assert moved > 0 and np.all(np.isfinite(history["loss"]))
    assert keras_zim.is_integral(model) and history["zim_integral"] == [1.0] * 3
    assert all(w.dtype == np.float32 for w in model.get_weights())


def test_mixed_bfloat16_keeps_exact_integers(policy):
    policy("mixed_bfloat16")
    model = toy.integer_model()
    assert model.layers[0].compute_dtype == "bfloat16"
    history, moved = _train(model, keras_zim.ZIM(learning_rate=0.3, seed=0))
    assert moved > 0 and np.all(np.isfinite(history["loss"]))
    assert keras_zim.is_integral(model) and history["zim_integral"] == [1.0] * 3


# --- the exact-integer range of each variable dtype ------------------------

# A dtype with p significand bits holds every integer in [-2**p, 2**p]
# exactly; beyond, odd integers are missing. ZIM saturates weights there.
LIMITS = {"float16": 2**11, "bfloat16": 2**8, "float32": 2**24, "float64": 2**53}


def _step(variable, gradient, unit=1.0):
    # r = 1 and c = 0: all 100 trials land on the one non-zero gradient entry,
    # a deterministic move of 100 units against its sign. (One `trials` value
    # throughout: each distinct value costs an XLA compile of the sampler.)
    optimizer = keras_zim.ZIM(learning_rate=1.0, trials=100, smoothing=0.0, unit=unit, scope="variable", seed=0)
    optimizer.apply([tf.constant(gradient, dtype=variable.dtype)], [variable])
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)


@pytest.mark.parametrize("dtype", sorted(LIMITS))
def test_weights_saturate_at_the_exact_integer_limit(dtype):
    limit = LIMITS[dtype]
    start = float(limit - 150)
    variable = keras.Variable(np.array([start, -start, 3.0]), dtype=dtype)
    np.testing.assert_array_equal(_step(variable, [-1.0, 0.0, 0.0]), [limit - 50, -start, 3.0])  # exact inside
    np.testing.assert_array_equal(_step(variable, [-1.0, 0.0, 0.0]), [limit, -start, 3.0])  # up: saturates
    np.testing.assert_array_equal(_step(variable, [0.0, 1.0, 0.0]), [limit, -limit + 50, 3.0])
    np.testing.assert_array_equal(_step(variable, [0.0, 1.0, 0.0]), [limit, -limit, 3.0])  # down: saturates
    np.testing.assert_array_equal(_step(variable, [1.0, 0.0, 0.0]), [limit - 100, -limit, 3.0])  # and back


def test_the_limit_scales_with_the_unit():
    # unit 0.5 in float16: multiples of 0.5 are exact up to 0.5 * 2**11 = 1024.
    variable = keras.Variable(np.array([990.5]), dtype="float16")
    np.testing.assert_array_equal(_step(variable, [-1.0], unit=0.5), [1024.0])  # 990.5 + 50 saturates
    np.testing.assert_array_equal(_step(variable, [1.0], unit=0.5), [974.0])

import keras
import numpy as np
import pytest

import keras_zim
from keras_zim import grid


@pytest.mark.parametrize(
    "values, unit, expected",
    [
        ([np.array([0.0, 3.0, -7.0])], 1.0, True),
        ([np.array([0.5])], 1.0, False),
        ([np.array([0.5, -1.25])], 0.25, True),
        ([np.array([np.nan])], 1.0, False),
        ([np.array([np.inf])], 1.0, False),
    ],
)
def test_is_integral_on_arrays(values, unit, expected):
    assert keras_zim.is_integral(values, unit=unit) is expected


def test_is_integral_reads_a_models_trainable_weights():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_initializer="ones")])
    assert keras_zim.is_integral(model)
    model.layers[0].bias.assign([0.0, 0.1])
    assert not keras_zim.is_integral(model)


def test_is_integral_takes_one_array_or_variable():
    assert keras_zim.is_integral(np.array([[1.0, 2.0]]))
    assert not keras_zim.is_integral(keras.Variable([0.5]))


@pytest.mark.parametrize("value", ["model", 3, None, {"w": np.zeros(2)}])
def test_is_integral_refuses_what_is_not_a_model_or_a_list_of_arrays(value):
    with pytest.raises(ValueError, match="Argument `model_or_variables` must be a Keras model or layer"):
        keras_zim.is_integral(value)


def test_is_integral_refuses_non_numeric_entries():
    with pytest.raises(ValueError, match="entry 1 is not one"):
        keras_zim.is_integral([np.zeros(2), "model"])


@pytest.mark.parametrize("unit", [0, -1.0, float("inf"), float("nan"), "1", True, None])
def test_is_integral_refuses_a_unit_that_is_not_a_positive_number(unit):
    with pytest.raises(ValueError, match="Argument `unit` must be a positive finite number .*Received: unit="):
        keras_zim.is_integral([np.zeros(2)], unit=unit)


def test_check_range():
    assert grid.check_range(-7.0, np.int8(7)) == (-7, 7)
    assert grid.check_range(None, 3, optional=True) == (None, 3)
    with pytest.raises(ValueError, match="Argument `low` must be a whole number. Received: low=None"):
        grid.check_range(None, 3)
    with pytest.raises(ValueError, match="low < high. Received: low=3, high=3"):
        grid.check_range(3, 3)


def test_exact_digits():
    assert [grid.exact_digits(d) for d in ("float16", "bfloat16", "float32", "float64", "int8")] == [11, 8, 24, 53, None]


def test_is_integral_takes_a_tf_variable():
    import tensorflow as tf

    assert keras_zim.is_integral(tf.Variable([1.0, -3.0])) and not keras_zim.is_integral(tf.Variable([1.5]))

import keras
import numpy as np
import pytest

import keras_zim


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

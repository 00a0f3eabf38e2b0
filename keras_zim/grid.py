"""The grid that ZIM keeps weights on: checks of exactness."""

import keras
import numpy as np

__all__ = ["is_integral"]


def is_integral(model_or_variables, unit=1.0):
    """Whether every trainable weight is an exact multiple of `unit`.

    Args:
        model_or_variables: a Keras model or layer (its trainable weights are
            checked), or a list of variables or arrays.
        unit: the grid step. Defaults to `1.0`.

    Returns:
        True if every entry is finite and `w / unit` is a whole number.

    Example:

    >>> is_integral([np.array([1.0, -2.0])]), is_integral([np.array([0.5])])
    (True, False)
    >>> is_integral([np.array([0.5])], unit=0.5)
    True
    """
    if isinstance(model_or_variables, keras.layers.Layer):
        model_or_variables = model_or_variables.trainable_weights
    for value in model_or_variables:
        steps = np.asarray(keras.ops.convert_to_numpy(value), np.float64) / unit
        if not (np.all(np.isfinite(steps)) and np.all(steps == np.round(steps))):
            return False
    return True

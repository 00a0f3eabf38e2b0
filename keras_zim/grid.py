"""The grid that ZIM keeps weights on: checks of exactness and of integer ranges."""

import math
import numbers

import keras
import numpy as np

__all__ = ["check_dtype_holds", "check_range", "exact_digits", "is_integral", "is_power_of_two"]

# Significand bits of each float dtype: every integer k with |k| <= 2**digits
# is exact in it, and so is k * unit for a power-of-two unit.
_DIGITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}


def is_power_of_two(value):
    """Whether `value` is a positive, finite power of two: a grid unit whose multiples are exact.

    >>> is_power_of_two(0.25), is_power_of_two(3.0), is_power_of_two(True)
    (True, False, False)
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return bool(real and math.isfinite(value) and value > 0 and math.frexp(value)[0] == 0.5)


def exact_digits(dtype):
    """Significand bits of a float dtype: integers up to `2**digits` are exact in it.

    Args:
        dtype: a float dtype or its name (`"float32"`, `"bfloat16"`, ...).

    Returns:
        The number of significand bits, or None for a dtype that is not one
        of float16, bfloat16, float32 and float64.

    Example:

    >>> exact_digits("float32"), exact_digits("bfloat16"), exact_digits("int32")
    (24, 8, None)
    """
    return _DIGITS.get(keras.backend.standardize_dtype(dtype))


def _whole(name, value):
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and value == int(value)):
        raise ValueError(f"Argument `{name}` must be a whole number. Received: {name}={value!r}")
    return int(value)


def check_range(low, high, optional=False):
    """Validates an integer range of grid units and returns it as ints.

    Args:
        low: the smallest allowed value in units, a whole number (an int or a
            whole-valued float such as `-7.0`).
        high: the largest allowed value, a whole number with `low < high`.
        optional: allow None for either bound (an open side). Defaults to
            `False`.

    Returns:
        `(low, high)` as ints (or None where an open side was allowed).

    Raises:
        ValueError: if a bound is not a whole number, `low >= high`, or a
            bound is beyond `2**53` (no float dtype holds it exactly).

    Example:

    >>> check_range(-7.0, 7), check_range(None, 3, optional=True)
    ((-7, 7), (None, 3))
    """
    bounds = []
    for name, value in (("low", low), ("high", high)):
        if value is None and optional:
            bounds.append(None)
            continue
        value = _whole(name, value)
        if abs(value) > 2**53:
            raise ValueError(
                f"Argument `{name}` must be at most 2**53 in magnitude (beyond it no float "
                f"dtype holds every integer exactly). Received: {name}={value}"
            )
        bounds.append(value)
    low, high = bounds
    if low is not None and high is not None and not low < high:
        raise ValueError(f"Arguments `low` and `high` must satisfy low < high. Received: low={low}, high={high}")
    return low, high


def check_dtype_holds(low, high, dtype, what):
    """Raises ValueError if a float `dtype` does not hold every integer of [low, high] exactly.

    Args:
        low: the smallest integer of the range, or None for an open side.
        high: the largest integer of the range, or None for an open side.
        dtype: the dtype the values will be held in.
        what: a name for the error message (e.g. `"IntegerRange(-7, 7)"`).

    Raises:
        ValueError: if `dtype` is not a float dtype, or a bound exceeds
            `2**digits` of it (`exact_digits`).
    """
    digits = exact_digits(dtype)
    if digits is None:
        raise ValueError(f"{what} needs a float dtype (float16, bfloat16, float32, float64). Received: dtype={dtype}")
    widest = max(abs(b) for b in (low, high) if b is not None)
    if widest > 2**digits:
        raise ValueError(
            f"The range [{low}, {high}] is wider than {keras.backend.standardize_dtype(dtype)} holds "
            f"exactly (every integer up to 2**{digits} = {2**digits}): {what} would leave the grid. "
            "Use a narrower range or a wider dtype."
        )


def _values(model_or_variables):
    name = "model_or_variables"
    if isinstance(model_or_variables, keras.layers.Layer):
        return list(model_or_variables.trainable_weights)
    single = isinstance(model_or_variables, (keras.Variable, np.ndarray, np.generic)) or keras.ops.is_tensor(
        model_or_variables
    )
    if single or (hasattr(model_or_variables, "shape") and hasattr(model_or_variables, "dtype")):
        return [model_or_variables]  # one array-like (a tf.Variable, a tensor of any backend)
    if isinstance(model_or_variables, (list, tuple)):
        return list(model_or_variables)
    raise ValueError(
        f"Argument `{name}` must be a Keras model or layer, or a list of variables or arrays. "
        f"Received: {name}={model_or_variables!r}"
    )


def is_integral(model_or_variables, unit=1.0):
    """Whether every trainable weight is an exact multiple of `unit`.

    Args:
        model_or_variables: a Keras model or layer (its trainable weights are
            checked), a list of variables or arrays, or one variable or array.
        unit: the grid step, a positive finite number. Defaults to `1.0`.

    Returns:
        True if every entry is finite and `w / unit` is a whole number.

    Raises:
        ValueError: if `model_or_variables` is none of the above (for example
            a string), an entry is not numeric, or `unit` is not a positive
            finite number.

    Example:

    >>> is_integral([np.array([1.0, -2.0])]), is_integral([np.array([0.5])])
    (True, False)
    >>> is_integral([np.array([0.5])], unit=0.5)
    True
    """
    real = isinstance(unit, numbers.Real) and not isinstance(unit, bool)
    if not (real and math.isfinite(unit) and unit > 0):
        raise ValueError(f"Argument `unit` must be a positive finite number (the grid step). Received: unit={unit!r}")
    for index, value in enumerate(_values(model_or_variables)):
        try:
            array = np.asarray(keras.ops.convert_to_numpy(value), np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Argument `model_or_variables` must hold numeric variables or arrays; entry {index} "
                f"is not one. Received: {value!r}"
            ) from error
        steps = array / unit
        if not (np.all(np.isfinite(steps)) and np.all(steps == np.round(steps))):
            return False
    return True

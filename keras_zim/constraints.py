"""Integer-range constraints: train ternary, int4 or int8 weights directly with ZIM."""

import math
import numbers

import keras

from keras_zim import grid

__all__ = ["IntegerRange", "Ternary", "signed_bits"]


def signed_bits(low, high):
    """Signed two's-complement bits needed to hold every integer in [low, high].

    Args:
        low: the smallest value, a whole number (int, or a float such as -37.0).
        high: the largest value, a whole number.

    Returns:
        An int >= 1: `b` such that `-2**(b-1) <= low` and `high <= 2**(b-1) - 1`.

    Raises:
        ValueError: if `low` or `high` is not a whole number, or `low > high`.

    Example:

    >>> signed_bits(-128, 127), signed_bits(0, 128), signed_bits(0, 0)
    (8, 9, 1)
    """
    for name, value in (("low", low), ("high", high)):
        whole = isinstance(value, numbers.Integral) or (
            isinstance(value, numbers.Real) and math.isfinite(value) and value == int(value)
        )
        if isinstance(value, bool) or not whole:
            raise ValueError(f"Argument `{name}` must be a whole number. Received: {name}={value!r}")
    low, high = int(low), int(high)
    if low > high:
        raise ValueError(f"Arguments must satisfy low <= high. Received: low={low}, high={high}")
    bits_high = high.bit_length() + 1 if high > 0 else 1  # 2**(b-1) - 1 >= high
    bits_low = (-low - 1).bit_length() + 1 if low < 0 else 1  # -2**(b-1) <= low
    return max(bits_high, bits_low)


def _check_unit(unit):
    if not grid.is_power_of_two(unit):
        raise ValueError(
            "Argument `unit` must be a positive power of two (the grid step, as in "
            f"keras_zim.ZIM). Received: unit={unit!r}"
        )
    return float(unit)


@keras.saving.register_keras_serializable(package="keras_zim")
class IntegerRange(keras.constraints.Constraint):
    """Keeps a weight inside `[low * unit, high * unit]`: a bounded integer grid.

    Pass it as a layer's `kernel_constraint` (or any `*_constraint`). Keras
    applies a variable's constraint after every optimizer step, on every path
    (jit on or off, either ZIM scope, `tf.distribute`, `LossScaleOptimizer`,
    a resumed run), so a model trained with `keras_zim.ZIM` from weights in
    the range keeps every weight an exact multiple of `unit` in
    `[low, high]` units. `IntegerRange(-127, 127)` trains int8 weights,
    `IntegerRange(-7, 7)` int4 and `Ternary()` ternary ones.

    The constraint clips; it never rounds, so a weight that is off the grid
    stays off it (`keras_zim.is_integral` tells). With ZIM a clipped weight
    stays on the grid, since both bounds are multiples of `unit`.

    #### Mathematical details

    ZIM's step followed by the constraint is a projected step: every unit
    move that would cross a bound is cut at the bound.

    ```none
    x ~ ZIM's law (unchanged: the sampler does not see the range)
    w <- clip(w - unit * x * sign(g), low * unit, high * unit)
    ```

    For one entry `w_i = high * unit` whose gradient is negative (ZIM moves
    it up), the step leaves it at the bound with probability 1; with a
    positive gradient it moves down by `min(x_i, high - low)` units,
    `x_i ~ Binomial(n, r q_i)`. Trials that land on an entry at a bound and
    push outward are spent for nothing (the other entries' law is unchanged),
    so a model with many entries at the bound moves less per step than an
    unbounded one: bounded ranges train best with a smaller rate `r`
    (docs/bounded.md).

    Args:
        low: the smallest value in grid units, a whole number.
        high: the largest value in grid units, a whole number, `low < high`.
        unit: the grid step `delta` (a positive power of two, as in
            `keras_zim.ZIM`). Defaults to `1.0`.

    Raises:
        ValueError: if `low` or `high` is not a whole number, `low >= high`,
            or `unit` is not a positive power of two; when applied, if the
            weight's dtype does not hold every integer of the range exactly
            (for example `IntegerRange(-1000, 1000)` on a bfloat16 weight).

    Example:

    >>> import numpy as np
    >>> constraint = IntegerRange(-7, 7)
    >>> np.asarray(constraint(np.array([-9.0, 3.0, 8.0], "float32"))).tolist()
    [-7.0, 3.0, 7.0]
    >>> layer = keras.layers.Dense(4, kernel_constraint=IntegerRange(-7, 7))
    """

    def __init__(self, low, high, unit=1.0):
        self.low, self.high = grid.check_range(low, high)
        self.unit = _check_unit(unit)

    def __call__(self, w):
        grid.check_dtype_holds(self.low, self.high, w.dtype, f"{type(self).__name__}({self.low}, {self.high})")
        low = keras.ops.cast(self.low * self.unit, w.dtype)
        high = keras.ops.cast(self.high * self.unit, w.dtype)
        return keras.ops.clip(w, low, high)

    def get_config(self):
        return {"low": self.low, "high": self.high, "unit": self.unit}


@keras.saving.register_keras_serializable(package="keras_zim")
class Ternary(IntegerRange):
    """Keeps a weight in `{-unit, 0, unit}`: `IntegerRange(-1, 1, unit)`.

    See `IntegerRange` for when Keras applies it and what it does to ZIM's
    step.

    Args:
        unit: the grid step (a positive power of two). Defaults to `1.0`.

    Raises:
        ValueError: if `unit` is not a positive power of two.

    Example:

    >>> import numpy as np
    >>> np.asarray(Ternary()(np.array([-3.0, 0.0, 2.0], "float32"))).tolist()
    [-1.0, 0.0, 1.0]
    """

    def __init__(self, unit=1.0):
        super().__init__(-1, 1, unit)

    def get_config(self):
        return {"unit": self.unit}

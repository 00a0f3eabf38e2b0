"""Integer-valued initialisers: the paper's discrete kernel initialisation."""

import math
import numbers
import random

import keras
import numpy as np
from keras import ops

from keras_zim import grid
from keras_zim import sampling

__all__ = ["Discrete"]

_DRAWS = ("kernel", "unit")


@keras.saving.register_keras_serializable(package="keras_zim")
class Discrete(keras.initializers.Initializer):
    """Integer weights: multinomial counts that follow a base initialiser.

    Draws `w0` from `base`, then returns `sign(w0) * x` with `x` multinomial
    counts whose probabilities follow `|w0| + c`: ZIM's sampler with rate 1,
    so most entries start at 0 or +-1. Use zeros for biases. `draw` says over
    what the counts are drawn:

    - `"kernel"` (the default, the paper's rule): one multinomial over the
      whole weight, with `m = round(size ** (1 / ndim))` trials, as in the
      paper's code. Fine for dense layers: a 784 x 128 kernel gets 317 trials.
    - `"unit"`: one multinomial per output unit (the last axis of a weight of
      two or more dimensions; a scalar or vector is one unit), over that
      unit's `fan_in = size / units` entries, with `m = fan_in` trials. Use it
      for convolution kernels. Every output unit then starts with non-zero
      weights (for a base, such as Glorot's, that draws no exact zeros).

    Why convolutions need `"unit"`: the paper's `m` is tiny for them (a
    3x3x16x16 kernel of 2,304 entries gets 7 trials), so most output
    channels start all zero. Measured on the conv and resnet models of
    `keras_zim.models` (seed 0): 13 of the 16 stem channels were all zero;
    a zero channel is 0 after BatchNorm and ReLU, and ReLU's gradient at 0 is
    0, so its kernel's gradient is exactly 0, and ZIM never moves a weight
    whose gradient is 0 (`sign(0) = 0`): such channels stay dead for good. In
    the resnet every channel of the last block was dead, so no kernel ever got
    a gradient and it stayed at 10% test accuracy; the conv model kept 3 and
    2 live channels of 16 and 32. With `draw="unit"` every channel is live
    and both learn: over 3 epochs of the 4,000-image MNIST subset (3 runs,
    `r = 0.05`) conv went from 52% +- 37% (one run stuck at 10%) to 89.6%
    +- 0.3%, the resnet from 10% to 89.3% +- 1.3% once BatchNorm's statistics
    are recomputed before testing (`keras_zim.models.calibrate_batch_norm`;
    docs/reproduce.md). One draw over a whole conv kernel with `m = size`
    trials trained as well, but leaves a channel all zero with probability
    about `exp(-fan_in)`; `"unit"` rules that out. BatchNorm's moving
    variance of a dead channel decays to 0, but that channel is 0 at
    inference too: it was not the cause.

    With `low` and/or `high` the counts are drawn as above and then clipped
    into `[low, high]` (an entry beyond a bound is set to it), so values
    strictly inside the range keep their probabilities. Pair it with the same range in
    `keras_zim.constraints.IntegerRange` so that training keeps it.

    #### Mathematical details

    ```none
    w0 ~ base(shape)
    draw="kernel":  x ~ Multinomial(m, (|w0| + c) / (||w0||_1 + c size)),
                    m = round(size ** (1 / ndim))
    draw="unit":    x[..., j] ~ Multinomial(m, (|w0[..., j]| + c) / (||w0[..., j]||_1 + c fan_in)),
                    one independent draw per unit j, m = fan_in = size / units
    w  = sign(w0) * x
    w  = clip(w, low, high)          (with a range)
    ```

    Args:
        base: a Keras initialiser or its name. Defaults to `"glorot_uniform"`.
        trials: `m`, a positive int (per unit with `draw="unit"`), or None for
            the rule of `draw`. Defaults to `None`.
        smoothing: `c >= 0`. Defaults to `1.0`.
        seed: int, or None for a fresh draw on every call. With an int the
            result is fully deterministic, the base draw included (so two
            layers given the same seeded instance get the same weights, as
            with Keras's own seeded initialisers). Defaults to `None`.
        draw: `"kernel"` (one draw over the whole weight, the paper's rule)
            or `"unit"` (one draw per output unit, `m = fan_in`; for
            convolutions). Defaults to `"kernel"`.
        low: the smallest initial value, a whole number, or None for no lower
            bound. Defaults to `None`.
        high: the largest initial value, a whole number (`low < high`), or
            None for no upper bound. Defaults to `None`.

    Raises:
        ValueError: if an argument is outside its allowed values; when
            called, if the dtype does not hold every integer of the range.

    Example:

    >>> w = Discrete(seed=0)((4, 3))
    >>> bool(np.all(w == np.round(w)))
    True
    >>> kernel = Discrete(seed=0, draw="unit")((3, 3, 16, 8))
    >>> bool(np.all(np.abs(kernel).sum(axis=(0, 1, 2)) == 3 * 3 * 16))
    True
    >>> ternary = Discrete(seed=0, draw="unit", low=-1, high=1)((3, 3, 16, 8))
    >>> sorted(np.unique(ternary).tolist())
    [-1.0, 0.0, 1.0]
    """

    def __init__(self, base="glorot_uniform", trials=None, smoothing=1.0, seed=None, draw="kernel", low=None, high=None):
        self.low, self.high = grid.check_range(low, high, optional=True)
        if trials is not None and (
            isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials <= 0
        ):
            raise ValueError(
                "Argument `trials` must be a positive integer or None. "
                f"Received: trials={trials}"
            )
        if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < math.inf:
            raise ValueError(
                f"Argument `smoothing` must be a finite float >= 0. Received: smoothing={smoothing}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Argument `seed` must be an int or None. Received: seed={seed}")
        if not isinstance(draw, str) or draw not in _DRAWS:
            raise ValueError(f"Argument `draw` must be one of {_DRAWS}. Received: draw={draw!r}")
        try:
            self.base = keras.initializers.get(base)
        except ValueError as error:
            raise ValueError(
                "Argument `base` must be a Keras initializer or the name of one "
                f"(e.g. 'glorot_uniform'). Received: base={base!r}"
            ) from error
        self.trials = None if trials is None else int(trials)
        self.smoothing = float(smoothing)
        self.seed = None if seed is None else int(seed)
        self.draw = draw

    def __call__(self, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        size = int(np.prod(shape))
        seed = random.randrange(2**31) if self.seed is None else self.seed
        config = self.base.get_config()
        if "seed" in config:
            config["seed"] = seed
        w0 = type(self.base).from_config(config)(shape, dtype="float32")
        w0 = np.asarray(ops.convert_to_numpy(w0), np.float64)
        if self.draw == "unit":
            # Rows are output units: [units, fan_in], one multinomial per row.
            units = shape[-1] if len(shape) >= 2 else 1
            rows = np.reshape(w0, [size // units, units]).T
            trials = self.trials or max(1, size // units)
        else:
            rows = np.reshape(w0, [1, size])
            trials = self.trials or max(1, round(size ** (1.0 / max(len(shape), 1))))
        # Rate 1: every trial passes, and one loop step of `trials` slots places them.
        counts = sampling.sample_counts(
            ops.convert_to_tensor(rows.astype(np.float32)),  # w0 is float32
            trials,
            1.0,
            [seed, 1],
            trials,
            smoothing=self.smoothing,
            jit_compile=False,  # called once per weight: no XLA compile
        )
        values = ops.convert_to_numpy(counts).astype(np.float64) * np.sign(rows)
        if self.draw == "unit":
            values = values.T
        values = np.reshape(values, shape) + 0.0
        if self.low is not None or self.high is not None:
            grid.check_dtype_holds(self.low, self.high, dtype or keras.config.floatx(), "Discrete(low, high)")
            values = np.clip(
                values,
                -math.inf if self.low is None else float(self.low),
                math.inf if self.high is None else float(self.high),
            )
        return ops.convert_to_tensor(values, dtype or keras.config.floatx())

    def get_config(self):
        return {
            "base": keras.initializers.serialize(self.base),
            "trials": self.trials,
            "smoothing": self.smoothing,
            "seed": self.seed,
            "draw": self.draw,
            "low": self.low,
            "high": self.high,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "base" in config:
            config["base"] = keras.initializers.deserialize(config["base"])
        return cls(**config)

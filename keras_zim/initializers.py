"""Integer-valued initialisers: the paper's discrete kernel initialisation."""

import math
import numbers
import random

import keras
import numpy as np
import tensorflow as tf

from keras_zim import sampling

__all__ = ["Discrete"]


@keras.saving.register_keras_serializable(package="keras_zim")
class Discrete(keras.initializers.Initializer):
    """Integer weights: multinomial counts that follow a base initialiser.

    Draws `w0` from `base`, then returns `sign(w0) * x` with
    `x ~ Multinomial(m, (|w0| + c) / (||w0||_1 + c size))`: ZIM's sampler with
    rate 1, so most entries start at 0 or +-1. This is how the paper's
    experiment initialised its kernels; use zeros for biases.

    #### Mathematical details

    ```none
    w0 ~ base(shape)
    x  ~ Multinomial(m, (|w0| + c) / (||w0||_1 + c size))
    w  = sign(w0) * x
    ```

    Args:
        base: a Keras initialiser or its name. Defaults to `"glorot_uniform"`.
        trials: `m`, a positive int, or None for `round(size ** (1 / ndim))`
            as in the paper's code. Defaults to `None`.
        smoothing: `c >= 0`. Defaults to `1.0`.
        seed: int, or None for a fresh draw on every call. With an int the
            result is fully deterministic, the base draw included (so two
            layers given the same seeded instance get the same weights, as
            with Keras's own seeded initialisers). Defaults to `None`.

    Example:

    >>> w = Discrete(seed=0)((4, 3))
    >>> bool(np.all(w == np.round(w)))
    True
    """

    def __init__(self, base="glorot_uniform", trials=None, smoothing=1.0, seed=None):
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

    def __call__(self, shape, dtype=None):
        shape = tuple(int(s) for s in shape)
        size = int(np.prod(shape))
        seed = random.randrange(2**31) if self.seed is None else self.seed
        config = self.base.get_config()
        if "seed" in config:
            config["seed"] = seed
        w0 = type(self.base).from_config(config)(shape, dtype="float32")
        w0 = tf.reshape(tf.cast(w0, tf.float64), [1, size])
        trials = self.trials or max(1, round(size ** (1.0 / max(len(shape), 1))))
        # chunk = trials + 1 (any chunk gives the same law): with chunk == trials
        # and every trial passing, the sampler's gap search gets a target equal
        # to its tree total and, run op by op, gathers out of range
        # (InvalidArgumentError; e.g. Discrete(seed=22)((128, 10)) with
        # chunk_size(36, 1.0) = 36). One more gap keeps the target below the total.
        counts = sampling.sample_counts(
            w0,
            trials,
            1.0,
            [seed, 1],
            trials + 1,
            smoothing=self.smoothing,
            jit_compile=False,  # called once per weight: no XLA compile
        )
        values = tf.reshape(tf.cast(counts, tf.float64) * tf.sign(w0), shape) + 0.0
        return tf.cast(values, dtype or keras.config.floatx())

    def get_config(self):
        return {
            "base": keras.initializers.serialize(self.base),
            "trials": self.trials,
            "smoothing": self.smoothing,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "base" in config:
            config["base"] = keras.initializers.deserialize(config["base"])
        return cls(**config)

"""The ZIM optimizer: discrete-by-design updates for Keras."""

import math
import numbers
import random
import warnings

import keras
import numpy as np
from keras import ops

from keras_zim import backend
from keras_zim import grid
from keras_zim import sampling

__all__ = ["ZIM"]

SCOPES = ("global", "variable")


def _exact_limit(dtype, unit):
    """Largest |w| whose neighbours on the grid are exact in `dtype`."""
    return unit * 2.0 ** grid.exact_digits(dtype)


def _moved(values, gradients, rate, seed, scope, trials, smoothing, unit, slots, relative_smoothing, precision,
           rate_hint):
    """The values after `w <- w - unit * x * sign(g)`, `x` drawn per `scope`.

    Draws `x` as `keras_zim.sampling.grid_moves` does for the global scope
    (same seed, same draw); every entry that moves is clipped to the largest
    magnitude the dtype holds exactly on the grid.
    """
    counts = sampling.scope_counts(
        gradients, scope, rate, seed, trials, smoothing, slots, relative_smoothing, precision, rate_hint
    )
    bounds, none = {}, ops.zeros((), "int32")  # one constant of each for all variables: fewer ops to trace
    result = []
    for value, gradient, count in zip(values, gradients, counts):
        dtype = keras.backend.standardize_dtype(value.dtype)
        if dtype not in bounds:
            limit = _exact_limit(dtype, unit)
            bounds[dtype] = (ops.convert_to_tensor(-limit, dtype), ops.convert_to_tensor(limit, dtype),
                             ops.convert_to_tensor(unit, dtype))
        low, high, step_size = bounds[dtype]
        count = ops.reshape(count, value.shape)
        step = ops.cast(count, dtype) * ops.sign(ops.cast(gradient, dtype))
        if unit != 1.0:
            step = step * step_size
        result.append(ops.where(count > none, ops.clip(value - step, low, high), value))
    return result


def _name(variable):
    return getattr(variable, "path", variable.name)


@keras.saving.register_keras_serializable(package="keras_zim")
class ZIM(keras.optimizers.Optimizer):
    """Zero-inflated multinomial (ZIM) optimizer: every move is whole grid units.

    Each step draws how many grid units each weight moves from a zero-inflated
    multinomial whose probabilities follow the gradient's magnitudes, and moves
    against the gradient's sign. Weights that start on the grid (multiples of
    `unit`, e.g. from `keras_zim.initializers.Discrete`) stay on it exactly: no
    rounding or quantisation anywhere. Use it with scale-invariant models
    (LayerNorm or BatchNorm on the logits), since integer weights make
    activations large.

    The sample is a pure function of (`seed`, `iterations`, variable): runs with
    the same seed are bit-identical, replicas under `tf.distribute` apply the
    same move (each samples from the all-reduced gradient), and a run resumed
    from a checkpoint continues as if it never stopped. A NaN or Inf anywhere in
    a scope's gradient skips the step for that scope (weights unchanged,
    `iterations` still counted). A learning-rate schedule whose value leaves
    [0, 1] is clipped into it. A weight that would leave the range where its
    dtype holds every grid point exactly (|w| <= unit * 2**24 in float32,
    2**11 in float16, 2**8 in bfloat16) saturates at that bound.

    #### Mathematical details

    For the gradient `g` of a scope (`"global"`: all trainable variables
    concatenated; `"variable"`: one variable), `d` entries, smoothing `c`,
    trials `n`, rate `r` (the learning rate) and grid unit `delta`:

    ```none
    q_i = (|g_i| + c) / (||g||_1 + c d)
    (x_0, x_1, ..., x_d) ~ Multinomial(n, [1 - r, r q_1, ..., r q_d])
    w <- w - delta * x * sign(g)
    ```

    `E[x_i] = n r q_i`, so the expected move is `n r delta q * sign(g)`, a
    descent direction; `r` plays the role of the learning rate.

    Args:
        learning_rate: the zero-inflation rate `r` in [0, 1]: a float, a
            `keras.optimizers.schedules.LearningRateSchedule` or a callable.
            With `n = d` a weight moves about `r` grid units per step on
            average. Defaults to `0.1`, from a sweep on real MNIST and
            scikit-learn digits (docs/sweep.md): on models of 650 to 101,770
            parameters, `r` in [0.1, 1] came within 1 point of the best test
            accuracy while 0.01 lost 3-16 points, and at 0.1 every trained
            weight fit in int8 (|w| <= 56; up to 486 at `r = 1`).
        trials: the number of trials `n`, a positive int, None for the
            number of parameters in the scope (`n = d`, the paper's setting),
            or `"root"` for `round(size ** (1 / ndim))` trials per variable
            (with `scope="variable"`: the authors' per-parameter optimizer).
            Defaults to `None`: in the sweep only `n r` mattered (`n = d/10`
            at rate `r` trained like `n = d` at `r / 10`), and `n = d` keeps
            `r` meaning the same at every model size.
        smoothing: `c >= 0`; with `c > 0` every weight can move. Defaults to
            `1.0`.
        relative_smoothing: if True, `c` is in units of the step's mean
            `|g|` over the scope, so a fixed share `c / (1 + c)` of the trials
            lands uniformly whatever the gradients' scale. Defaults to `False`.
        scope: `"global"` samples one multinomial over all trainable
            variables (the paper's rule); `"variable"` one per variable.
            Defaults to `"global"`.
        unit: the grid step `delta`, a positive power of two so that its
            multiples are exact in floating point. Defaults to `1.0`.
        precision: arithmetic of the sampler's partial sums: `"float64"`,
            `"float32x2"` (double-float32: no float64 anywhere, for TPUs and
            JAX without x64; trials land within 1.1e-13 of `q_i`) or `"auto"`
            (float64 where the backend has it enabled, else float32x2).
            Defaults to `"auto"`.
        seed: int seed of the stateless sampler, or None for a fresh one
            chosen now and stored in the config. Defaults to `None`.
        name: Defaults to `"zim"`.
        **kwargs: Keras optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `gradient_accumulation_steps`,
            `loss_scale_factor`, ...). `weight_decay` is refused: a real-valued
            decay would move weights off the grid. With `use_ema`, the
            averages are snapped to the nearest grid point when they are
            written into the model at the end of `fit`.

    Raises:
        ValueError: if an argument is outside its allowed values.

    Example:

    >>> import keras, keras_zim
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(3, kernel_initializer=keras_zim.initializers.Discrete(seed=0)),
    ...     keras.layers.LayerNormalization(center=False, scale=False)])
    >>> model.compile(optimizer=keras_zim.ZIM(learning_rate=0.5, seed=0), loss="mse")
    >>> _ = model.fit(np.ones((8, 4)), np.zeros((8, 3)), verbose=0)
    >>> keras_zim.is_integral(model)
    True

    References:
        Wilson, Zanasi and Constantinides, "Convergence for Discrete Parameter
        Update Schemes", arXiv:2512.04051 (2025).
    """

    def __init__(
        self,
        learning_rate=0.1,
        trials=None,
        smoothing=1.0,
        scope="global",
        relative_smoothing=False,
        unit=1.0,
        precision="auto",
        seed=None,
        name="zim",
        **kwargs,
    ):
        if isinstance(learning_rate, bool) or (
            isinstance(learning_rate, numbers.Real) and not 0 <= learning_rate <= 1
        ):
            raise ValueError(
                "Argument `learning_rate` must be a float in [0, 1] (the "
                "zero-inflation rate), a LearningRateSchedule or a callable. "
                f"Received: learning_rate={learning_rate}"
            )
        if trials is not None and trials != "root" and (
            isinstance(trials, bool) or not isinstance(trials, numbers.Integral) or trials <= 0
        ):
            raise ValueError(
                "Argument `trials` must be a positive integer, None (the number "
                f"of parameters in the scope) or 'root'. Received: trials={trials!r}"
            )
        if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing < math.inf:
            raise ValueError(
                "Argument `smoothing` must be a finite float >= 0. "
                f"Received: smoothing={smoothing}"
            )
        if scope not in SCOPES:
            raise ValueError(
                f"Argument `scope` must be one of {SCOPES}. Received: scope={scope!r}"
            )
        if trials == "root" and scope != "variable":
            raise ValueError(
                "Argument `trials='root'` (round(size ** (1 / ndim)) per variable) "
                f"needs scope='variable'. Received: scope={scope!r}"
            )
        if not isinstance(relative_smoothing, bool):
            raise ValueError(
                "Argument `relative_smoothing` must be True or False. "
                f"Received: relative_smoothing={relative_smoothing!r}"
            )
        if not grid.is_power_of_two(unit):
            raise ValueError(
                "Argument `unit` must be a positive power of two (1, 0.5, 2**-7, "
                f"...) so that its multiples are exact. Received: unit={unit}"
            )
        if precision not in sampling.PRECISIONS:
            raise ValueError(
                f"Argument `precision` must be one of {sampling.PRECISIONS}. Received: precision={precision!r}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Argument `seed` must be an int or None. Received: seed={seed}")
        if kwargs.get("weight_decay") is not None:
            raise ValueError(
                "Argument `weight_decay` is not supported by ZIM: a real-valued "
                "decay would move weights off the grid. Allowed: None. Received: "
                f"weight_decay={kwargs['weight_decay']}"
            )
        if kwargs.get("use_ema") and kwargs.get("ema_overwrite_frequency"):
            raise ValueError(
                "Argument `ema_overwrite_frequency` must be None with ZIM: it "
                "would overwrite the weights with real-valued averages during "
                "training. Received: "
                f"ema_overwrite_frequency={kwargs['ema_overwrite_frequency']}"
            )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.trials = trials if trials in (None, "root") else int(trials)
        self.relative_smoothing = relative_smoothing
        self.smoothing = float(smoothing)
        self.scope = scope
        self.unit = float(unit)
        self.precision = precision
        self.seed = random.randrange(2**31) if seed is None else int(seed)
        self._pending = {}
        self._expected_updates = 0

    def build(self, variables):
        if self.built:
            return
        for variable in variables:
            if grid.exact_digits(variable.dtype) is None:
                raise ValueError(
                    "ZIM trains float variables (float16, bfloat16, float32, float64); variable "
                    f"`{_name(variable)}` has dtype {keras.backend.standardize_dtype(variable.dtype)}."
                )
        super().build(variables)
        self._precision = sampling.resolve_precision(self.precision)  # in build: under a TPU strategy's scope
        with backend.eager_scope():  # the current rate sizes the sampler's loop steps
            rate = float(np.clip(keras.ops.convert_to_numpy(self.learning_rate), 0.0, 1.0))
            off_grid = [_name(v) for v in variables if not grid.is_integral([v], self.unit)]
        if off_grid:
            warnings.warn(
                f"ZIM moves weights by whole multiples of unit={self.unit}, so weights that start off "
                f"that grid stay off it: {', '.join(off_grid[:5])}{' ...' if len(off_grid) > 5 else ''}. "
                "Start them on it with keras_zim.initializers.Discrete.",
                stacklevel=2,
            )
        sizes = [int(np.prod(v.shape)) for v in variables]
        if self.trials == "root":
            self._trials = [max(1, round(size ** (1 / len(v.shape)))) if v.shape else 1 for v, size in zip(variables, sizes)]
        elif self.scope == "global":
            self._trials = [self.trials or sum(sizes)] * len(sizes)
        else:
            self._trials = [self.trials or size for size in sizes]
        self._slots = [sampling.chunk_size(trials, rate) for trials in self._trials]
        self._rate_hint = rate

    def apply(self, grads, trainable_variables=None):
        # update_step collects the step's gradients and moves all variables
        # once the last one arrives: one draw for every scope of the step.
        self._pending = {}
        self._expected_updates = sum(g is not None for g in grads)
        result = super().apply(grads, trainable_variables)
        if self._pending:
            raise RuntimeError(
                "ZIM received fewer gradients than `apply` was given; call "
                "`optimizer.apply(grads, variables)` with all of a step's gradients."
            )
        return result

    def update_step(self, gradient, variable, learning_rate):
        device = getattr(variable, "device", None)
        pending = self._pending.setdefault(device, [])
        pending.append((ops.reshape(ops.convert_to_tensor(gradient), variable.shape), variable))
        if len(pending) == self._expected_updates:
            del self._pending[device]
            gradients, variables = zip(*pending)
            self._move(gradients, variables, learning_rate)

    def _move(self, gradients, variables, learning_rate):
        stream = -1 if self.scope == "global" else -2
        seed = backend.fold_in(
            ops.convert_to_tensor([self.seed, stream], "int32"), ops.cast(self.iterations, "int32")
        )
        index = [self._get_variable_index(v) for v in variables]
        if self.scope == "global":
            trials, slots = (self._trials[index[0]],), (self._slots[index[0]],)
        else:
            trials, slots = tuple(self._trials[i] for i in index), tuple(self._slots[i] for i in index)
        static = dict(scope=self.scope, trials=trials, smoothing=self.smoothing, unit=self.unit, slots=slots,
                      relative_smoothing=self.relative_smoothing, precision=self._precision,
                      rate_hint=self._rate_hint)
        args = (list(gradients), ops.cast(learning_rate, "float32"), seed)
        backend.assign_moved(self, _moved, variables, args, static)

    def finalize_variable_values(self, var_list):
        """With `use_ema`, writes the averages snapped to the nearest grid point."""
        super().finalize_variable_values(var_list)
        if self.use_ema:
            for variable in var_list:
                variable.assign(ops.round(variable / self.unit) * self.unit)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "trials": self.trials,
                "smoothing": self.smoothing,
                "scope": self.scope,
                "relative_smoothing": self.relative_smoothing,
                "unit": self.unit,
                "precision": self.precision,
                "seed": self.seed,
            }
        )
        return config


# `keras.optimizers.get("zim")` and `model.compile(optimizer="zim")` find it,
# as they find Keras's own optimizers by name.
keras.saving.get_custom_objects().update({"zim": ZIM, "ZIM": ZIM})

"""Keras callbacks for ZIM training.

ZIMMonitor: what the optimizer did each epoch, in History and TensorBoard.
CalibrateBatchNorm: BatchNorm statistics of the current integer weights
before every evaluation.
"""

import math
import sys

import keras
import numpy as np

from keras_zim import backend
from keras_zim.constraints import IntegerRange
from keras_zim.constraints import signed_bits
from keras_zim.models import calibrate_batch_norm
from keras_zim.optimizers import ZIM

__all__ = ["CalibrateBatchNorm", "ZIMMonitor"]


def _zim_of(optimizer):
    """The ZIM inside `optimizer` (itself, or a LossScaleOptimizer's inner one), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if isinstance(inner, ZIM) else None


def _gradients(model, data):
    """The gradients (NumPy, None where unconnected) of `model`'s compiled loss on `data`.

    The loss includes `model.losses` and is computed in inference mode.
    Keras has no portable gradient: `keras_zim.backend.gradients` has one per backend.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    variables = model.trainable_variables

    def loss():
        y_pred = model(x, training=False)
        return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)

    gradients = backend.gradients(loss, variables)
    return [None if g is None else keras.ops.convert_to_numpy(g) for g in gradients]


class ZIMMonitor(keras.callbacks.Callback):
    """Logs ZIM's diagnostics at the end of every epoch.

    The values are added to the epoch's `logs`, so `History` records them and
    a `keras.callbacks.TensorBoard` placed after this callback in the
    `callbacks` list writes them (as `epoch_zim_...`). Everything is computed
    from what Keras exposes (the weights before and after each step, the
    optimizer's rate, trials and iterations), so the numbers are exact rather
    than estimated:

    - `zim_moved_fraction`: the fraction of trainable entries whose value at
      the end of the epoch differs from its value at the start.
    - `zim_moves_per_step` (with `per_step=True`): the mean over the epoch's
      steps of `||w_after - w_before||_1 / unit`, the number of unit moves a
      step made. It equals the step's number of non-zero trials except for
      trials that landed on an entry whose gradient is exactly 0 (`sign(0) = 0`
      makes them no-ops). With `steps_per_execution > 1` Keras reports batches
      per execution, and moves of one entry in opposite directions within an
      execution cancel: the value is then a lower bound.
    - `zim_expected_trials`: the mean over the epoch's steps of `n * r`, the
      expected number of non-zero trials per step (`n` = `trials`, or the
      number of parameters; with `scope="variable"` summed over variables;
      `r` the learning rate of that step, clipped to [0, 1]).
    - `zim_max_abs`: the largest `|w| / unit` over trainable weights.
    - `zim_int_bits`: the signed integer width that holds every trainable
      weight in units (NaN if a weight is off the grid).
    - `zim_integral`: 1.0 if every trainable weight is a finite multiple of
      `unit`, else 0.0.
    - `zim_at_bound` (only if a trainable weight has a
      `keras_zim.constraints.IntegerRange`): the fraction of the entries of
      such weights that sit at either bound of their range. A fraction near
      1 says the range is too narrow or the rate too large.
    - With `per_variable=True`, for each trainable variable `path`:
      `zim_min/<path>` and `zim_max/<path>` (its smallest and largest entry
      in units) and, with an `IntegerRange`, `zim_at_bound/<path>`.
    - `zim_replicas_agree` (only under a `tf.distribute` strategy with more
      than one local replica): 1.0 if every local replica holds bit-identical
      trainable weights, else 0.0. ZIM samples the same move on every replica
      from the all-reduced gradient; this checks that nothing (e.g. a
      non-deterministic kernel on some accelerator) broke that.
    - `zim_grad_l1` (with `data`): `||g||_1` of the gradient of the compiled
      loss (plus `model.losses`) on `data`, at the epoch's final weights, in
      inference mode (no dropout, BatchNorm with its moving statistics) so
      that measuring changes nothing.

    Args:
        data: an `(x, y)` or `(x, y, sample_weight)` batch for `zim_grad_l1`,
            or None to skip it. Defaults to `None`.
        per_step: compare weights around every step for `zim_moves_per_step`
            (one copy of the trainable weights per step). Defaults to `True`.
        per_variable: also log each variable's range in units and fraction
            at its bound. Defaults to `False`.

    Raises:
        ValueError: for invalid arguments, or at the start of `fit` if the
            model's optimizer is not `keras_zim.ZIM` (or a LossScaleOptimizer
            around one).

    Example:

    >>> import keras, numpy as np, keras_zim
    >>> from keras_zim.callbacks import ZIMMonitor
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, kernel_initializer="zeros")])
    >>> model.compile(optimizer=keras_zim.ZIM(learning_rate=0.5, trials=8, seed=0), loss="mse")
    >>> x, y = np.ones((8, 4)), np.ones((8, 2))
    >>> history = model.fit(x, y, batch_size=4, verbose=0, callbacks=[ZIMMonitor(data=(x, y))])
    >>> history.history["zim_expected_trials"], history.history["zim_integral"]
    ([4.0], [1.0])
    """

    def __init__(self, data=None, per_step=True, per_variable=False):
        super().__init__()
        if not isinstance(per_variable, bool):
            raise ValueError(f"Argument `per_variable` must be a bool. Received: per_variable={per_variable!r}")
        self.per_variable = per_variable
        if data is not None and not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
            raise ValueError(
                "Argument `data` must be None or an (x, y) or (x, y, sample_weight) "
                f"tuple. Received: data of type {type(data).__name__}"
            )
        if not isinstance(per_step, bool):
            raise ValueError(f"Argument `per_step` must be a bool. Received: per_step={per_step!r}")
        self.data = None if data is None else tuple(data)
        self.per_step = per_step

    # --- reading the model ---------------------------------------------

    def _weights(self):
        return [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in self.model.trainable_variables]

    def _iterations(self):
        return int(keras.ops.convert_to_numpy(self._zim.iterations))

    def _trials(self):
        trials = self._zim._trials  # one entry per variable, each scope's n
        return sum(trials) if self._zim.scope == "variable" else trials[0]

    def _rate(self):
        rate = float(keras.ops.convert_to_numpy(self._zim.learning_rate))
        return min(max(rate, 0.0), 1.0)

    def _replicas_agree(self):
        """Whether local replicas hold identical weights; None without replicas."""
        strategy = getattr(self.model, "distribute_strategy", None)  # TensorFlow only
        if strategy is None or strategy.num_replicas_in_sync < 2:
            return None
        agree, compared = True, False
        for variable in self.model.trainable_variables:
            copies = [np.asarray(c) for c in strategy.experimental_local_results(variable.value)]
            compared |= len(copies) > 1
            agree &= all(np.array_equal(copies[0], c) for c in copies[1:])
        return agree if compared else None

    def _grad_l1(self):
        return math.fsum(
            float(np.abs(np.asarray(g, np.float64)).sum()) for g in _gradients(self.model, self.data) if g is not None
        )

    def _log_ranges(self, logs, units):
        """`zim_at_bound` over IntegerRange-constrained weights, and the per-variable keys."""
        at_bound = bounded = 0
        for variable, values in zip(self.model.trainable_variables, units):
            constraint = getattr(variable, "constraint", None)
            fraction = None
            if isinstance(constraint, IntegerRange):
                scale = constraint.unit / self._zim.unit
                hits = int(np.count_nonzero((values <= constraint.low * scale) | (values >= constraint.high * scale)))
                at_bound, bounded = at_bound + hits, bounded + values.size
                fraction = hits / values.size if values.size else 0.0
            if self.per_variable and values.size:
                logs[f"zim_min/{variable.path}"] = float(values.min())
                logs[f"zim_max/{variable.path}"] = float(values.max())
                if fraction is not None:
                    logs[f"zim_at_bound/{variable.path}"] = fraction
        if bounded:
            logs["zim_at_bound"] = at_bound / bounded

    # --- the callback -----------------------------------------------------

    def on_train_begin(self, logs=None):
        self._zim = _zim_of(self.model.optimizer)
        if self._zim is None:
            raise ValueError(
                "ZIMMonitor needs a model compiled with keras_zim.ZIM (or a "
                "LossScaleOptimizer around one). Received: optimizer="
                f"{type(self.model.optimizer).__name__}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._weights()
        self._previous = self._start
        self._start_step = self._iterations()
        self._moves = 0.0
        self._expected = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        # The rate this step will use: the optimizer evaluates its schedule
        # at the current `iterations`.
        self._batch_step = self._iterations()
        self._batch_rate = self._rate()

    def on_train_batch_end(self, batch, logs=None):
        steps = self._iterations() - self._batch_step
        self._expected += steps * self._trials() * self._batch_rate
        if self.per_step:
            current = self._weights()
            self._moves += math.fsum(float(np.abs(a - b).sum()) for a, b in zip(current, self._previous))
            self._previous = current

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        unit = self._zim.unit
        end = self._weights()
        steps = self._iterations() - self._start_step
        entries = sum(w.size for w in end)
        moved = sum(int(np.count_nonzero(a != b)) for a, b in zip(end, self._start))
        logs["zim_moved_fraction"] = moved / entries if entries else 0.0
        if self.per_step:
            logs["zim_moves_per_step"] = self._moves / unit / steps if steps else 0.0
        logs["zim_expected_trials"] = self._expected / steps if steps else 0.0
        units = [w / unit for w in end]
        integral = all(np.all(np.isfinite(u)) and np.all(u == np.round(u)) for u in units)
        logs["zim_max_abs"] = max((float(np.abs(u).max()) for u in units if u.size), default=0.0)
        logs["zim_integral"] = 1.0 if integral else 0.0
        if integral:
            low = min((int(u.min()) for u in units if u.size), default=0)
            high = max((int(u.max()) for u in units if u.size), default=0)
            logs["zim_int_bits"] = float(signed_bits(low, high))
        else:
            logs["zim_int_bits"] = float("nan")
        self._log_ranges(logs, units)
        agree = self._replicas_agree()
        if agree is not None:
            logs["zim_replicas_agree"] = 1.0 if agree else 0.0
        if self.data is not None:
            logs["zim_grad_l1"] = self._grad_l1()
        self._start = self._previous = None  # free the copies between epochs



class CalibrateBatchNorm(keras.callbacks.Callback):
    """Recomputes BatchNorm's moving statistics before every evaluation and after training.

    A ZIM step moves a fraction `r` of the weights by a whole unit, so
    BatchNorm's moving averages (over the last ~10 steps) mix networks that
    differ, and inference-mode accuracy falls far below training-mode accuracy
    (62% against 90% on the resnet of `keras_zim.models`, docs/reproduce.md).
    This callback calls `keras_zim.models.calibrate_batch_norm(model, images)`
    at `on_test_begin` (the validation pass of `fit`, and `evaluate` when
    passed the callback) and at `on_train_end`, so the model `fit` returns
    predicts with statistics of its final weights. Trainable weights are not
    touched: integer weights stay integers.

    Args:
        images: a batch of training inputs (a few hundred), as passed to
            `model(images)`: a NumPy array or a tensor, not a dataset.

    Raises:
        TypeError: if `images` is a `tf.data.Dataset` or not array-like.

    Example:

    >>> import keras, numpy as np, keras_zim
    >>> from keras_zim import models
    >>> model = models.build_model("conv", discrete=True, seed=0)
    >>> model.compile(optimizer=keras_zim.ZIM(seed=0), loss="sparse_categorical_crossentropy")
    >>> x, y = np.random.default_rng(0).random((16, 28, 28, 1)), np.arange(16) % 10
    >>> calibrate = keras_zim.callbacks.CalibrateBatchNorm(x[:8])
    >>> _ = model.fit(x, y, batch_size=8, verbose=0, validation_data=(x, y), callbacks=[calibrate])
    """

    def __init__(self, images):
        super().__init__()
        tf = sys.modules.get("tensorflow")  # a dataset means TensorFlow is loaded already
        if (tf is not None and isinstance(images, tf.data.Dataset)) or not hasattr(images, "shape"):
            raise TypeError(
                "Argument `images` must be a batch of inputs (a NumPy array or a tensor), "
                "for example `next(iter(dataset))[0]` for a dataset of (images, labels) batches. "
                f"Received: images of type {type(images).__name__}"
            )
        self.images = images

    def on_test_begin(self, logs=None):
        calibrate_batch_norm(self.model, self.images)

    def on_train_end(self, logs=None):
        calibrate_batch_norm(self.model, self.images)

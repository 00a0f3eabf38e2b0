"""keras_zim.callbacks.ZIMMonitor: logged values against hand computations; load."""

import glob
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zim
from keras_zim.callbacks import ZIMMonitor

ROWS, BATCH, EPOCHS = 32, 8, 2  # 4 steps per epoch


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(ROWS, 4)).astype("float32"), rng.normal(size=(ROWS, 3)).astype("float32")


def _linear(optimizer):
    """Dense(3) on 4 inputs with MSE: its gradient has a closed form."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    kernel = np.random.default_rng(1).integers(-2, 3, (4, 3)).astype("float32")
    model.set_weights([kernel, np.zeros(3, "float32")])
    model.compile(optimizer=optimizer, loss="mse")
    return model


class _Recorder(keras.callbacks.Callback):
    """The trainable weights at every epoch start and after every step."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs = getattr(self, "epochs", []) + [[[w.numpy() for w in self.model.trainable_variables]]]

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1].append([w.numpy() for w in self.model.trainable_variables])


def _mse_gradient_l1(x, y, kernel, bias):
    # L = mean over rows and outputs of (x W + b - y)^2, so with e = x W + b - y:
    # dL/dW = 2 x^T e / (rows * outputs), dL/db = 2 sum_rows(e) / (rows * outputs).
    e = x.astype(np.float64) @ kernel + bias - y
    scale = 2.0 / e.size
    return np.abs(scale * x.T @ e).sum() + np.abs(scale * e.sum(0)).sum()


def test_logged_values_match_a_hand_computation():
    x, y = _data()
    model = _linear(keras_zim.ZIM(learning_rate=0.25, trials=12, seed=0))
    recorder = _Recorder()
    history = model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=[ZIMMonitor(data=(x, y)), recorder],
    ).history
    for epoch, snapshots in enumerate(recorder.epochs):
        assert len(snapshots) == 1 + ROWS // BATCH
        start, end = snapshots[0], snapshots[-1]
        entries = sum(w.size for w in end)
        moved = sum(np.count_nonzero(a != b) for a, b in zip(start, end))
        assert history["zim_moved_fraction"][epoch] == moved / entries
        steps = [
            sum(np.abs(a - b).sum() for a, b in zip(after, before))
            for before, after in zip(snapshots[:-1], snapshots[1:])
        ]
        assert history["zim_moves_per_step"][epoch] == np.mean(steps)
        assert history["zim_expected_trials"][epoch] == 12 * 0.25
        top = max(np.abs(w).max() for w in end)
        assert history["zim_max_abs"][epoch] == top
        low, high = min(w.min() for w in end), max(w.max() for w in end)
        assert history["zim_int_bits"][epoch] == max(int(high).bit_length(), int(-low - 1).bit_length()) + 1
        assert history["zim_integral"][epoch] == 1.0
        expected = _mse_gradient_l1(x, y, *end)
        assert history["zim_grad_l1"][epoch] == pytest.approx(expected, rel=1e-5)  # float32 forward pass
    assert "zim_replicas_agree" not in history  # no tf.distribute strategy
    # A mean of 4 steps' whole-unit moves: a positive multiple of 1/4.
    assert all(v > 0 and 4 * v == round(4 * v) for v in history["zim_moves_per_step"])


_GRADIENT_L1 = """
import keras, numpy as np
from keras_zim import callbacks
rng = np.random.default_rng(0)
x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 3)).astype("float32")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activity_regularizer="l2")])
model.set_weights([np.random.default_rng(1).integers(-2, 3, (4, 3)).astype("float32"), np.zeros(3, "float32")])
model.compile(optimizer="sgd", loss="mse")
print(repr(sum(float(np.abs(g).sum()) for g in callbacks._gradients(model, (x, y)))))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_gradient_counts_the_loss_and_model_losses_on_every_backend(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.path.dirname(os.path.dirname(__file__)))
    child = subprocess.run([sys.executable, "-c", _GRADIENT_L1], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    # The MSE of _mse_gradient_l1 plus the activity loss 0.01 * sum(o^2) / rows on o = x W
    # (zero bias): dW = 2 x^T (e / e.size + 0.01 o / rows), db = the same summed over rows.
    x, y = (a.astype(np.float64) for a in _data())
    o = x @ np.random.default_rng(1).integers(-2, 3, (4, 3))
    d = 2 * ((o - y) / o.size + 0.01 * o / len(o))
    assert float(child.stdout.split()[-1]) == pytest.approx(np.abs(x.T @ d).sum() + np.abs(d.sum(0)).sum(), rel=1e-5)


@pytest.mark.parametrize("scope, trials, n", [("variable", 5, 10), ("global", None, 15)])
def test_expected_trials_follow_the_schedule_and_scope(scope, trials, n):
    x, y = _data()
    # r_t = 0.8 * 0.5**t at step t; the first step's 0.8 stays inside [0, 1].
    schedule = keras.optimizers.schedules.ExponentialDecay(0.8, decay_steps=1, decay_rate=0.5)
    model = _linear(keras_zim.ZIM(learning_rate=schedule, trials=trials, scope=scope, seed=0))
    history = model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=[ZIMMonitor(per_step=False)]
    ).history
    assert "zim_moves_per_step" not in history and "zim_grad_l1" not in history
    for epoch in range(EPOCHS):
        rates = [0.8 * 0.5**t for t in range(4 * epoch, 4 * epoch + 4)]
        assert history["zim_expected_trials"][epoch] == pytest.approx(n * np.mean(rates), rel=1e-6)


def test_off_grid_weights_are_reported():
    x, y = _data()
    model = _linear(keras_zim.ZIM(learning_rate=0.25, trials=12, seed=0))
    model.layers[0].bias.assign([0.5, 0.0, 0.0])  # off the grid
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[ZIMMonitor()]).history
    assert history["zim_integral"] == [0.0] and math.isnan(history["zim_int_bits"][0])
    assert history["zim_moves_per_step"][0] > 0


def test_values_reach_tensorboard(tmp_path):
    # Keras's TensorBoard callback needs the `tensorboard` package, which
    # TensorFlow 2.21 no longer installs.
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed")
    x, y = _data()
    model = _linear(keras_zim.ZIM(learning_rate=0.25, trials=12, seed=0))
    history = model.fit(
        x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
        callbacks=[ZIMMonitor(data=(x, y)), keras.callbacks.TensorBoard(str(tmp_path))],
    ).history
    written = {}
    for path in glob.glob(str(tmp_path / "train" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("epoch_zim_"):
                    written.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    for key in ("zim_moved_fraction", "zim_moves_per_step", "zim_expected_trials", "zim_max_abs",
                "zim_int_bits", "zim_integral", "zim_grad_l1"):
        logged = written[f"epoch_{key}"]
        assert [logged[e] for e in range(EPOCHS)] == pytest.approx(history[key], rel=1e-6), key


def test_bad_arguments_and_other_optimizers_are_refused():
    with pytest.raises(ValueError, match="Argument `data` must be None or an"):
        ZIMMonitor(data=np.zeros(3))
    with pytest.raises(ValueError, match="Argument `data` must be None or an"):
        ZIMMonitor(data=(1, 2, 3, 4))
    with pytest.raises(ValueError, match="Argument `per_step` must be a bool"):
        ZIMMonitor(per_step=1)
    x, y = _data()
    model = _linear("sgd")
    with pytest.raises(ValueError, match="ZIMMonitor needs a model compiled with keras_zim.ZIM"):
        model.fit(x, y, verbose=0, callbacks=[ZIMMonitor()])


def _rss_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


def test_a_million_parameters_many_steps_no_error_no_growth_no_nan():
    # 1000 x 1000 kernel + bias = 1,001,000 trainable parameters, global
    # scope with n = d trials (about 50,000 moves a step at r = 0.05).
    inputs, units, rows, batch = 1000, 1000, 640, 16  # 40 steps per epoch
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, inputs)).astype("float32")
    y = rng.integers(0, units, rows)
    model = keras.Sequential(
        [keras.Input((inputs,)), keras.layers.Dense(units), keras.layers.LayerNormalization(center=False, scale=False)]
    )
    model.set_weights([rng.integers(-1, 2, (inputs, units)).astype("float32"), np.zeros(units, "float32")])
    assert model.count_params() >= 10**6
    model.compile(
        optimizer=keras_zim.ZIM(learning_rate=0.05, seed=0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rss = []

    class Memory(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rss.append(_rss_bytes())

    history = model.fit(
        x, y, batch_size=batch, epochs=4, shuffle=False, verbose=0, callbacks=[ZIMMonitor(), Memory()]
    ).history
    assert int(model.optimizer.iterations.numpy()) == 160
    assert all(np.isfinite(history["loss"]))
    assert keras_zim.is_integral(model) and history["zim_integral"] == [1.0] * 4
    # n r = 1,001,000 * 0.05 = 50,050 expected non-zero trials a step. The
    # realised moves are the non-zero trials (sd sqrt(n r (1 - r)) = 218 a
    # step) less those landing on an exactly-zero gradient entry (rare here).
    assert history["zim_expected_trials"] == pytest.approx([50050.0] * 4)
    assert all(0.9 * 50050 < m <= 50050 + 8 * math.sqrt(50050) for m in history["zim_moves_per_step"])
    # Memory: after the first epoch (compiles, caches), the next 120 steps may
    # not grow the process by more than 16 copies of the float32 weights
    # (64 MB): a leak of one weight-sized buffer per step would be 480 MB.
    weight_bytes = 4 * model.count_params()
    assert rss[-1] - rss[0] < 16 * weight_bytes, [r / 2**20 for r in rss]


CONV_X = np.random.default_rng(0).random((32, 28, 28, 1)).astype("float32")
CONV_Y = np.arange(32) % 10


def _conv_fit(callbacks):
    """One epoch of ZIM on the integer conv model, validated on its training images."""
    from keras_zim import models

    x, y = CONV_X, CONV_Y
    model = models.build_model("conv", discrete=True, seed=0)
    model.compile(optimizer=keras_zim.ZIM(seed=0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=8, shuffle=False, verbose=0, validation_data=(x, y), callbacks=callbacks)
    return model, x, y, history.history["val_loss"][-1]


def test_calibrate_batch_norm_callback_validates_and_ends_with_the_final_weights_statistics():
    from keras_zim.callbacks import CalibrateBatchNorm

    model, x, y, val_loss = _conv_fit([CalibrateBatchNorm(CONV_X[:16])])
    assert keras_zim.is_integral(model)
    # After fit: the first BatchNorm holds the statistics of the first
    # convolution's output on the calibration images under the final kernel.
    conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
    norm = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    features = np.asarray(keras.Model(model.inputs, conv.output)(x[:16]), np.float64)
    np.testing.assert_allclose(np.asarray(norm.moving_mean), features.mean((0, 1, 2)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(norm.moving_variance), features.var((0, 1, 2)), rtol=1e-3, atol=1e-3)
    # The one validation pass ran after the epoch's last step, with statistics
    # calibrated under the same weights: it equals a fresh evaluation now.
    np.testing.assert_allclose(val_loss, model.evaluate(x, y, verbose=0), rtol=1e-5)

    # Without the callback: the same seeded steps give the same integer
    # weights, but the moving averages are stale and validation differs.
    stale, _, _, stale_loss = _conv_fit([])
    for calibrated, unchanged in zip(model.trainable_weights, stale.trainable_weights):
        np.testing.assert_array_equal(np.asarray(calibrated), np.asarray(unchanged))
    stale_norm = next(l for l in stale.layers if isinstance(l, keras.layers.BatchNormalization))
    assert np.abs(np.asarray(stale_norm.moving_mean) - np.asarray(norm.moving_mean)).max() > 1.0
    assert abs(stale_loss - val_loss) > 0.05


@pytest.mark.parametrize("images", [tf.data.Dataset.range(3), [[1.0, 2.0]], None])
def test_calibrate_batch_norm_callback_refuses_anything_but_a_batch(images):
    from keras_zim.callbacks import CalibrateBatchNorm

    with pytest.raises(TypeError, match=r"Argument `images` must be a batch of inputs"):
        CalibrateBatchNorm(images)


def test_fraction_at_the_bound_and_per_variable_ranges():
    x, y = _data()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_constraint=keras_zim.constraints.IntegerRange(-2, 2))])
    model.set_weights([np.random.default_rng(1).integers(-2, 3, (4, 3)).astype("float32"), np.zeros(3, "float32")])
    model.compile(optimizer=keras_zim.ZIM(learning_rate=1.0, seed=0), loss="mse")
    recorder = _Recorder()
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=False,
                        callbacks=[recorder, ZIMMonitor(per_variable=True)]).history
    for epoch in range(EPOCHS):
        kernel, bias = recorder.epochs[epoch + 1][0] if epoch + 1 < EPOCHS else [w.numpy() for w in model.trainable_variables]
        assert history["zim_at_bound"][epoch] == np.mean(np.abs(kernel) == 2)  # only the kernel has a range
        assert history[f"zim_at_bound/{model.layers[0].kernel.path}"][epoch] == np.mean(np.abs(kernel) == 2)
        assert history[f"zim_min/{model.layers[0].bias.path}"][epoch] == bias.min()
        assert history[f"zim_max/{model.layers[0].kernel.path}"][epoch] == kernel.max() <= 2
    assert f"zim_at_bound/{model.layers[0].bias.path}" not in history
    assert 0 < history["zim_at_bound"][-1] < 1
    plain = ZIMMonitor()
    history = _linear(keras_zim.ZIM(seed=0)).fit(x, y, batch_size=BATCH, verbose=0, callbacks=[plain]).history
    assert "zim_at_bound" not in history and not any(key.startswith("zim_min/") for key in history)
    with pytest.raises(ValueError, match="Argument `per_variable` must be a bool. Received: per_variable=1"):
        ZIMMonitor(per_variable=1)

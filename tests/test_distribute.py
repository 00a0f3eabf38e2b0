"""ZIM under tf.distribute: MirroredStrategy replicas and MultiWorkerMirroredStrategy workers.

Each configuration runs in its own Python process (this file, run as a script):
logical devices must be configured before TensorFlow initialises its devices,
and each worker of a multi-worker cluster is a process. The children are
bounded in time and killed (their whole process group) on timeout.

The data are small integers and the loss is a mean squared error over a
power-of-two number of entries, so every gradient is exact in float32: the
all-reduced gradient of two replicas is bit for bit the gradient one device
computes on the whole batch, and "two replicas end exactly where one device
ends" is a test of ZIM, not of floating-point summation order.
"""

import json
import os
import sys

import children
import numpy as np
import pytest

SCOPES = ("global", "variable")
WORKER_SCOPES = ("global",)  # the scope that gathers every gradient; each scope costs a compile per worker
EPOCHS = 2
BATCH = 16  # global batch; 64 rows make 4 steps per epoch


def _data():
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, size=(64, 8)).astype("float32")
    y = rng.integers(-3, 4, size=(64, 4)).astype("float32")
    return x, y


def _build(scope):
    import keras

    import keras_zim

    # One layer, two variables: the global scope must still gather both
    # (each distinct gradient shape costs an XLA compile of the sampler, so
    # few shapes keep the test fast).
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    kernel = np.random.default_rng(1).integers(-2, 3, (8, 4)).astype("float32")
    model.set_weights([kernel, np.zeros(4, "float32")])
    model.compile(optimizer=keras_zim.ZIM(learning_rate=0.5, scope=scope, seed=3), loss="mse")
    return model


def _recorder(model, strategy, steps):
    """A callback that records the weights and whether replicas agree, after every step."""
    import keras

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            agree = True
            if strategy is not None:
                for variable in model.trainable_variables:
                    copies = [c.numpy() for c in strategy.experimental_local_results(variable.value)]
                    agree &= all(np.array_equal(copies[0], c) for c in copies[1:])
            steps.append({"weights": [w.tolist() for w in model.get_weights()], "replicas_agree": bool(agree)})

    return Record()


def _mirrored_child(out):
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras_zim
    from keras_zim.callbacks import ZIMMonitor

    x, y = _data()
    results = {}
    for scope in SCOPES:
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            two = _build(scope)
        two_steps, one_steps = [], []
        history = two.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                          callbacks=[ZIMMonitor(), _recorder(two, strategy, two_steps)]).history
        integral, iterations = keras_zim.is_integral(two), int(two.optimizer.iterations.numpy())
        # Break replica 1 on purpose: the monitor must notice.
        copy = strategy.experimental_local_results(two.layers[0].bias.value)[1]
        copy.assign(copy + 1.0)
        broken = two.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[ZIMMonitor()]).history
        one = _build(scope)  # no strategy: one device
        one.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                callbacks=[_recorder(one, None, one_steps)])
        results[scope] = {
            "replicas": strategy.num_replicas_in_sync,
            "two": two_steps,
            "one": one_steps,
            "integral": integral,
            "monitor_agree": history["zim_replicas_agree"],
            "monitor_broken": broken["zim_replicas_agree"],
            "monitor_integral": history["zim_integral"],
            "iterations": iterations,
        }
    with open(out, "w") as stream:
        json.dump(results, stream)


def _multi_worker_strategy():
    """MultiWorkerMirroredStrategy with `reduce` fixed for Keras 3's `fit`.

    Keras 3.15's `fit` calls `strategy.reduce` on a whole (x, y) batch and on
    0-d metrics with `axis=0` (keras-team/keras#20585): MultiWorkerMirroredStrategy
    accepts neither. This subclass reduces each leaf and drops `axis` for
    scalars; it changes nothing in how gradients are all-reduced.
    """
    import tensorflow as tf

    class Strategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis=None):
            def one(v):
                rank = self.experimental_local_results(v)[0].shape.rank
                return super(Strategy, self).reduce(reduce_op, v, axis if rank else None)

            return tf.nest.map_structure(one, value)

    return Strategy()


def _worker_child(index, ports, out):
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )
    import tensorflow as tf

    import keras_zim

    strategy = _multi_worker_strategy()
    x, y = _data()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).with_options(options)
    results = {"replicas": strategy.num_replicas_in_sync}
    for scope in WORKER_SCOPES:
        with strategy.scope():
            model = _build(scope)
        model.fit(dataset, epochs=EPOCHS, verbose=0)
        results[scope] = {
            "weights": [w.tolist() for w in model.get_weights()],
            "integral": keras_zim.is_integral(model),
            "iterations": int(model.optimizer.iterations.numpy()),
        }
    with open(out, "w") as stream:
        json.dump(results, stream)


# --- the parent side -----------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs the MirroredStrategy child and the two workers side by side."""
    directory = tmp_path_factory.mktemp("distribute")
    ports = ",".join(map(str, children.free_ports(2)))
    outs = [directory / name for name in ("mirrored.json", "worker0.json", "worker1.json")]
    processes = [children.start(__file__, "mirrored", outs[0])]
    processes += [children.start(__file__, "worker", i, ports, outs[i + 1]) for i in range(2)]
    children.finish(processes)
    return [json.loads(out.read_text()) for out in outs]


@pytest.fixture(scope="module")
def mirrored(results):
    return results[0]


@pytest.fixture(scope="module")
def workers(results):
    return results[1:]


@pytest.mark.parametrize("scope", SCOPES)
def test_mirrored_replicas_stay_identical_after_every_step(mirrored, scope):
    result = mirrored[scope]
    assert result["replicas"] == 2
    assert len(result["two"]) == EPOCHS * 64 // BATCH == result["iterations"]
    assert all(step["replicas_agree"] for step in result["two"])
    assert result["integral"]
    # ZIMMonitor sees the same under the strategy.
    assert result["monitor_agree"] == result["monitor_integral"] == [1.0] * EPOCHS
    assert result["monitor_broken"] == [0.0]


@pytest.mark.parametrize("scope", SCOPES)
def test_two_replicas_end_exactly_where_one_device_ends(mirrored, scope):
    # Each replica holds the gradient of its half batch: were the sample drawn
    # from it, the replicas would differ (and differ from one device).
    result = mirrored[scope]
    for step, (two, one) in enumerate(zip(result["two"], result["one"])):
        for a, b in zip(two["weights"], one["weights"]):
            np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
    first = result["one"][0]["weights"]
    assert any(not np.array_equal(a, b) for a, b in zip(first, result["one"][-1]["weights"]))


@pytest.mark.parametrize("scope", WORKER_SCOPES)
def test_two_workers_end_identical_integral_and_equal_to_one_device(workers, mirrored, scope):
    assert [w["replicas"] for w in workers] == [2, 2]
    first, second = workers[0][scope], workers[1][scope]
    assert first["iterations"] == second["iterations"] == EPOCHS * 64 // BATCH
    assert first["integral"] and second["integral"]
    for a, b, one in zip(first["weights"], second["weights"], mirrored[scope]["one"][-1]["weights"]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, one)


if __name__ == "__main__":
    if sys.argv[1] == "mirrored":
        _mirrored_child(sys.argv[2])
    elif sys.argv[1] == "worker":
        _worker_child(int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")], sys.argv[4])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

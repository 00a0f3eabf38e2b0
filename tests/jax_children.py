"""Child processes of test_backends.py on JAX: `python jax_children.py MODE`."""

import sys

import jax
import keras
import numpy as np

import keras_zim


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(8, kernel_initializer=keras_zim.initializers.Discrete(seed=0)),
        keras.layers.Dense(3, kernel_initializer=keras_zim.initializers.Discrete(seed=1)),
        keras.layers.LayerNormalization(center=False, scale=False),
    ])


def data_parallel():
    """Trains on 2 devices under DataParallel and on one, same global batches; prints the comparison."""
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.random.default_rng(1).normal(size=(64, 3)).astype("float32")

    def train(distribution):
        keras.distribution.set_distribution(distribution)
        model = _model()
        model.compile(optimizer=keras_zim.ZIM(0.3, seed=1), loss="mse", jit_compile=True)
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        return model

    assert len(jax.devices()) == 2, jax.devices()
    parallel = train(keras.distribution.DataParallel(devices=jax.devices()))
    shards = [[np.asarray(s.data) for s in w.value.addressable_shards] for w in parallel.trainable_weights]
    print("devices per weight:", sorted({len(s) for s in shards}))
    print("replicas identical:", all(np.array_equal(s[0], t) for s in shards for t in s[1:]))
    one = train(None)
    same = all(np.array_equal(np.asarray(a.value), np.asarray(b.value))
               for a, b in zip(parallel.trainable_weights, one.trainable_weights))
    print("integral:", keras_zim.is_integral(parallel), keras_zim.is_integral(one))
    print("equal to one device:", same)


def jax_hlo(precision="float32x2"):
    """Prints how many float64 values the compiled ZIM step holds (StableHLO and optimised HLO)."""
    model = _model()
    optimizer = keras_zim.ZIM(precision=precision, seed=0)
    optimizer.build(model.trainable_variables)
    gradients = [jax.numpy.full(v.shape, 1e-3, "float32") for v in model.trainable_variables]

    def step(values, state, gradients):
        return optimizer.stateless_apply(state, gradients, values)

    values = [v.value for v in model.trainable_variables]
    state = [v.value for v in optimizer.variables]
    lowered = jax.jit(step).lower(values, state, gradients)
    texts = [lowered.as_text(), lowered.compile().as_text()]
    print("f64 ops:", sum(text.count("f64") for text in texts))


if __name__ == "__main__":
    {"data_parallel": data_parallel, "jax_hlo": jax_hlo}[sys.argv[1]](*sys.argv[2:])

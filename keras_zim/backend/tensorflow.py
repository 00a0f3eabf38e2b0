"""TensorFlow: stateless Philox draws, XLA through `tf.function(jit_compile=True)`."""

import weakref

import keras
import tensorflow as tf


def fold_in(seed, data):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), data)


def uniform(shape, seed, dtype):
    return tf.random.stateless_uniform(shape, seed, dtype=dtype, alg="philox")


def bits24(shape, seed):
    return tf.random.stateless_uniform(shape, seed, minval=0, maxval=1 << 24, dtype=tf.int32, alg="philox")


def gather(values, index):
    return tf.gather(values, index)


def scatter_add(counts, index, live):
    return tf.tensor_scatter_nd_add(counts, index[:, None], tf.cast(live, counts.dtype))


def high_half(x):
    return tf.bitcast(tf.bitwise.bitwise_and(tf.bitcast(x, tf.int32), -4096), tf.float32)


def jit(fn, static_argnames=()):
    # Python arguments are static under tf.function already.
    return tf.function(fn, jit_compile=True, autograph=False)


def has_float64():
    # TPUs have no float64.
    return not isinstance(tf.distribute.get_strategy(), (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def eager_scope():
    return tf.init_scope()


# Eager steps share one compiled mover. Inside a traced step each owner gets
# its own: a nested function shared across optimizers can be reused by a later
# trace while still referring to an earlier model's (deleted) variables.
_eager_movers = {}
_traced_movers = weakref.WeakKeyDictionary()


def _assign_all(fn, variables, args, static):
    for variable, value in zip(variables, fn(*args, **static)):
        variable.assign(value)


def assign_moved(owner, fn, variables, args, static):
    """`variable.assign` of `fn(*args, **static)` inside one XLA function: no extra copy of the weights."""
    if not tf.inside_function():
        mover = _eager_movers.setdefault(fn, tf.function(_assign_all, jit_compile=True, autograph=False))
    else:
        mover = _traced_movers.setdefault(owner, tf.function(_assign_all, jit_compile=True, autograph=False))
    mover(fn, [v.value if isinstance(v, keras.Variable) else v for v in variables], args, static)


def gradients(loss, variables):
    with tf.GradientTape() as tape:
        value = loss()
    return [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(value, variables)]

"""TensorFlow: stateless Philox draws, XLA through `tf.function(jit_compile=True)`."""

import tensorflow as tf


def fold_in(seed, data):
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int32), data)


def uniform(shape, seed, dtype):
    return tf.random.stateless_uniform(shape, seed, dtype=dtype, alg="philox")


def bits24(shape, seed):
    return tf.random.stateless_uniform(shape, seed, minval=0, maxval=1 << 24, dtype=tf.int32, alg="philox")


def gather(values, index):
    return tf.gather(values, index)


def scatter_add(counts, index):
    return tf.tensor_scatter_nd_add(counts, index[:, None], tf.ones_like(index))


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

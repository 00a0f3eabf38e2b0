"""TensorFlow: stateless Philox draws keyed by hashed seeds, XLA through `tf.function(jit_compile=True)`."""

import weakref

import keras
import tensorflow as tf


_GOLDEN = 0x9E3779B9  # 2**32 / golden ratio


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 in which every bit mixes."""
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(shift, tf.uint32)))
        x = x * tf.constant(factor, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def fold_in(seed, data):
    """Hashes `data` into the two seed words; injective in `data` for a given seed.

    Integer hashing, not a Philox draw (`tf.random.experimental.stateless_fold_in`):
    each Philox site is inlined by XLA, and the sampler has about twenty.
    """
    low, high = tf.unstack(tf.bitcast(tf.cast(seed, tf.int32), tf.uint32))  # one op, not two slices
    data = tf.bitcast(tf.cast(data, tf.int32), tf.uint32)
    first = _fmix32(tf.bitwise.bitwise_xor(low, _fmix32(data + tf.constant(_GOLDEN, tf.uint32))))
    second = _fmix32(high + first)
    return tf.bitcast(tf.stack([first, second], axis=-1), tf.int32)


def hash32(counter, key):
    """Two keyed rounds of `_fmix32`: int32 words, a bijection of `counter` for each key."""
    x = tf.bitcast(tf.cast(counter, tf.int32), tf.uint32)
    low, high = tf.unstack(tf.bitcast(tf.cast(key, tf.int32), tf.uint32))
    return tf.bitcast(_fmix32(_fmix32(tf.bitwise.bitwise_xor(x, low)) + high), tf.int32)


def _key_counter(seed):
    """Philox key `uint64 [1]` and counter `uint64 [2]` from the seed's 64 bits (no scrambling draw).

    The counter starts at `(0, key)`, a run-time value: with a constant
    counter XLA's code for the step was slower (docs/sampler.md).
    """
    words = tf.cast(tf.bitcast(tf.cast(seed, tf.int32), tf.uint32), tf.uint64)
    key = tf.bitwise.bitwise_or(words[:1], tf.bitwise.left_shift(words[1:], tf.constant(32, tf.uint64)))
    return key, tf.concat([tf.zeros([1], tf.uint64), key], 0)


def uniform(shape, seed, dtype):
    key, counter = _key_counter(seed)
    return tf.raw_ops.StatelessRandomUniformV2(shape=shape, key=key, counter=counter, alg=1, dtype=dtype)


def bits24(shape, seed):
    key, counter = _key_counter(seed)
    return tf.raw_ops.StatelessRandomUniformIntV2(
        shape=shape, key=key, counter=counter, alg=1, minval=tf.constant(0), maxval=tf.constant(1 << 24)
    )


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
    values = [tf.convert_to_tensor(v) for v in variables]  # one read each
    for variable, value in zip(variables, fn(values, *args, **static)):
        variable.assign(value)


def assign_moved(owner, fn, variables, args, static):
    """`variable.assign` of `fn(values, *args, **static)` inside one XLA function: no extra copy of the weights."""
    if not tf.inside_function():
        mover = _eager_movers.setdefault(fn, tf.function(_assign_all, jit_compile=True, autograph=False))
    else:
        mover = _traced_movers.setdefault(owner, tf.function(_assign_all, jit_compile=True, autograph=False))
    mover(fn, [v.value if isinstance(v, keras.Variable) else v for v in variables], args, static)


def gradients(loss, variables):
    with tf.GradientTape() as tape:
        value = loss()
    return [None if g is None else tf.convert_to_tensor(g) for g in tape.gradient(value, variables)]

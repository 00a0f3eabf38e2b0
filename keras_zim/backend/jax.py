"""JAX: threefry keys carried as int32 `[2]`, XLA through `jax.jit`."""

import jax
import jax.numpy as jnp
import keras


def _key(seed):
    bits = jax.lax.bitcast_convert_type(jnp.asarray(seed, jnp.int32), jnp.uint32)
    return jax.random.wrap_key_data(bits, impl="threefry2x32")


def fold_in(seed, data):
    data = jax.lax.bitcast_convert_type(jnp.asarray(data, jnp.int32), jnp.uint32)
    folded = jax.random.key_data(jax.random.fold_in(_key(seed), data))
    return jax.lax.bitcast_convert_type(folded, jnp.int32)


def uniform(shape, seed, dtype):
    return jax.random.uniform(_key(seed), tuple(shape), dtype=dtype)


def bits24(shape, seed):
    bits = jax.random.bits(_key(seed), tuple(shape), jnp.uint32)
    return jnp.right_shift(bits, 8).astype(jnp.int32)


def _fmix32(x):
    """MurmurHash3's 32-bit finaliser, as keras_zim.backend.tensorflow's."""
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = (x ^ (x >> shift)) * jnp.uint32(factor)
    return x ^ (x >> 16)


def hash32(counter, key):
    x = jax.lax.bitcast_convert_type(jnp.asarray(counter, jnp.int32), jnp.uint32)
    k = jax.lax.bitcast_convert_type(jnp.asarray(key, jnp.int32), jnp.uint32)
    return jax.lax.bitcast_convert_type(_fmix32(_fmix32(x ^ k[0]) + k[1]), jnp.int32)


def gather(values, index):
    return values.at[index].get(mode="promise_in_bounds")


def scatter_add(counts, index, live):
    return counts.at[index].add(live.astype(counts.dtype), mode="promise_in_bounds")


def high_half(x):
    bits = jax.lax.bitcast_convert_type(x, jnp.int32)
    return jax.lax.bitcast_convert_type(jnp.bitwise_and(bits, -4096), jnp.float32)


def jit(fn, static_argnames=()):
    return jax.jit(fn, static_argnames=static_argnames)


def has_float64():
    # JAX disables float64 unless told otherwise; TPUs have none.
    return bool(jax.config.jax_enable_x64) and jax.default_backend() != "tpu"


def gradients(loss, variables):
    def stateless_loss(values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values)), collect_losses=True):
            return loss()

    return jax.grad(stateless_loss)([v.value for v in variables])

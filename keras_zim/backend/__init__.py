"""What differs per Keras backend, behind functions of the same names.

The sampler and the optimizer are written with `keras.ops`; the few things
that cannot be portable (stateless random bits, scatter-add, gather, bit
masks, compiling) live in one small module per backend, chosen once from
`keras.backend.backend()` and imported lazily, so that `import keras_zim`
needs only the backend in use:

- `fold_in(seed, data)`: a new stateless seed, int32 `[2]`, from a seed and an int.
- `uniform(shape, seed, dtype)`: Uniform[0, 1) floats, a pure function of `seed`.
- `assign_moved(owner, fn, variables, args, static)`: assigns
  `fn(values, *args, **static)` to `variables`, `values` their current values
  (on TensorFlow read and assigned inside one XLA function).
- `bits24(shape, seed)`: uniform int32 in `[0, 2**24)`.
- `hash32(counter, key)`: int32 words hashed from int32 `counter` (any shape) and a seed: a keyed bijection of the counter.
- `gather(values, index)`: `values[index]` along the first axis, indices in range.
- `scatter_add(counts, index, live)`: `counts` with 1 added at each `index` where `live` (repeats add up; indices in range).
- `high_half(x)`: float32 `x` with its 12 low mantissa bits cleared (exact).
- `eager_scope()`: a context that runs eagerly (out of a traced function).
- `gradients(loss, variables)`: gradients of `loss()` with respect to `variables` (None where unconnected).
- `jit(fn, static_argnames)`: `fn` compiled with XLA where the backend compiles.
- `has_float64()`: whether float64 arithmetic is available and enabled.
"""

import contextlib
import importlib

import keras

__all__ = [
    "assign_moved", "bits24", "eager_scope", "hash32", "fold_in", "gather", "gradients", "has_float64", "high_half", "jit",
    "name", "scatter_add", "uniform",
]

name = keras.backend.backend()
if name not in ("tensorflow", "jax", "torch"):
    raise ImportError(
        f"keras_zim runs on the Keras backends 'tensorflow', 'jax' and 'torch'. Received: KERAS_BACKEND={name!r}"
    )
_impl = importlib.import_module(f"keras_zim.backend.{name}")

_compiled = {}


def _assign_returned(owner, fn, variables, args, static):
    """`owner.assign(variable, fn(values, *args, **static))` for each variable, `fn` compiled once."""
    if fn not in _compiled:
        _compiled[fn] = _impl.jit(fn, static_argnames=tuple(static))
    values = [keras.ops.convert_to_tensor(v) for v in variables]
    for variable, value in zip(variables, _compiled[fn](values, *args, **static)):
        owner.assign(variable, value)


# TensorFlow assigns inside its XLA function (no extra copy of the weights) and
# enters tf.init_scope; JAX and torch assign what the compiled function returns.
assign_moved = getattr(_impl, "assign_moved", _assign_returned)
eager_scope = getattr(_impl, "eager_scope", contextlib.nullcontext)
bits24 = _impl.bits24
fold_in = _impl.fold_in
gather = _impl.gather
gradients = _impl.gradients
hash32 = _impl.hash32
has_float64 = _impl.has_float64
high_half = _impl.high_half
jit = _impl.jit
scatter_add = _impl.scatter_add
uniform = _impl.uniform

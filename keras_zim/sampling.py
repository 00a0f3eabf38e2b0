"""The exact zero-inflated multinomial sampler: pure tensor functions.

Everything in keras_zim that draws counts (the optimizer, the distribution and
the initialiser) calls `sample_counts`; the optimizer turns counts into a grid
move with `grid_moves`. Data flows one way: gradient -> weights -> counts -> move.

#### Mathematical details

For non-negative weights `w` (for ZIM, `w_i = |g_i| + c`), `q = w / sum(w)`,
trials `n` and rate `r`:

```none
x ~ Multinomial(n, [1 - r, r q_1, ..., r q_d]),  the no-op count x_0 dropped.
```

It is drawn exactly, in two stages that compose to that law:

1. The number of passing trials `N ~ Binomial(n, r)`: the gaps between passing
   trials are Geometric(r), `G = 1 + floor(log(V) / log(1 - r))` with
   `V ~ Uniform(0, 1]`; `N` counts the partial sums of gaps that stay `<= n`.
   Gaps are drawn `chunk` at a time until a partial sum passes `n`, so any `N`
   is exact and one chunk almost always suffices.
2. Given `N`, each passing trial lands on `i` with probability `q_i`, by the
   inverse CDF in float64: a binary search over prefix sums of blocks of
   `_BLOCK` weights, then a scan inside the chosen block. Trials are placed
   `chunk` at a time, so memory is O(chunk * _BLOCK + d), never O(n d).

Rows whose weights sum to zero have no direction and get zero counts. The
inverse CDF is exact up to float64 rounding of the partial sums (relative error
about 1e-16 per boundary); float32 sums would distort q by up to 12% at d = 1e6.
"""

import math

import tensorflow as tf

__all__ = [
    "chunk_size",
    "sample_counts",
    "grid_moves",
]

_BLOCK = 128
MAX_CHUNK = 1 << 16


def chunk_size(total_count, rate):
    """Static number of trials drawn per loop iteration.

    `n r + 8 sqrt(n r) + 16` covers `N ~ Binomial(n, r)` in one iteration
    except with probability below 1e-15; capped at `n` and `MAX_CHUNK`.

    Args:
        total_count: Python int, the trials `n`.
        rate: Python float in [0, 1], the expected rate `r`.

    Returns:
        A Python int >= 1.
    """
    mean = total_count * rate
    size = math.ceil(mean + 8.0 * math.sqrt(mean) + 16.0)
    return max(1, min(size, total_count, MAX_CHUNK))


def _uniform(shape, seed, stream, step):
    """Float64 Uniform[0, 1) keyed on (seed, stream, step), stateless."""
    key = tf.random.experimental.stateless_fold_in(seed, stream)
    key = tf.random.experimental.stateless_fold_in(key, step)
    return tf.random.stateless_uniform(shape, key, dtype=tf.float64, alg="philox")


def _passing_trials(total_count, rate, seed, chunk):
    """N ~ Binomial(n, r) per row, by counting Geometric(r) gaps up to n."""
    rows = total_count.shape[0]
    log_fail = tf.math.log1p(-rate)[:, None]

    def more(step, position, count):
        return tf.reduce_any(position <= total_count)

    def draw(step, position, count):
        v = 1.0 - _uniform([rows, chunk], seed, 0, step)
        gaps = 1.0 + tf.math.floor(tf.math.log(v) / log_fail)
        gaps = tf.where(rate[:, None] > 0.0, gaps, math.inf)
        ends = position[:, None] + tf.math.cumsum(gaps, axis=1)
        count += tf.reduce_sum(tf.cast(ends <= total_count[:, None], tf.int32), 1)
        return step + 1, ends[:, -1], count

    start = (tf.constant(0), tf.zeros_like(total_count), tf.zeros([rows], tf.int32))
    return tf.while_loop(more, draw, start)[2]


def _upper_bound(sorted_rows, values):
    """Per row, how many entries of `sorted_rows` are <= each of `values`."""
    size = sorted_rows.shape[1]
    low = tf.zeros(tf.shape(values), tf.int32)
    high = tf.fill(tf.shape(values), size)
    for _ in range(max(1, size).bit_length()):
        middle = (low + high) // 2
        entry = tf.gather(sorted_rows, tf.minimum(middle, size - 1), batch_dims=1)
        right = (middle < high) & (entry <= values)
        low = tf.where(right, middle + 1, low)
        high = tf.where(right, high, middle)
    return low


def _place_trials(weights, passing, seed, chunk):
    """Counts of `passing` trials per row, each landing on i w.p. q_i."""
    rows, size = weights.shape
    block = min(_BLOCK, size)
    num_blocks = -(-size // block)
    padded = tf.pad(weights, [[0, 0], [0, num_blocks * block - size]])
    blocks = tf.reshape(padded, [rows, num_blocks, block])
    block_ends = tf.math.cumsum(tf.reduce_sum(blocks, axis=2), axis=1)
    total = block_ends[:, -1]
    passing = tf.where(total > 0.0, passing, 0)
    row_ids = tf.broadcast_to(tf.range(rows)[:, None], [rows, chunk])

    def more(step, counts):
        return tf.reduce_any(step * chunk < passing)

    def place(step, counts):
        u = _uniform([rows, chunk], seed, 1, step) * total[:, None]
        b = tf.minimum(_upper_bound(block_ends, u), num_blocks - 1)
        before = tf.gather(block_ends, b - 1, batch_dims=1)
        local = u - tf.where(b > 0, before, 0.0)
        inside = tf.math.cumsum(tf.gather(blocks, b, batch_dims=1), axis=2)
        j = tf.reduce_sum(tf.cast(inside <= local[..., None], tf.int32), axis=2)
        index = tf.minimum(b * block + tf.minimum(j, block - 1), size - 1)
        live = step * chunk + tf.range(chunk)[None, :] < passing[:, None]
        where = tf.stack([row_ids, index], axis=2)
        return step + 1, tf.tensor_scatter_nd_add(counts, where, tf.cast(live, tf.int32))

    start = (tf.constant(0), tf.zeros([rows, size], tf.int32))
    return tf.while_loop(more, place, start)[1]


@tf.function(jit_compile=True)
def _sample_counts(weights, total_count, rate, seed, chunk):
    passing = _passing_trials(total_count, rate, seed, chunk)
    return _place_trials(weights, passing, seed, chunk)


def sample_counts(weights, total_count, rate, seed, chunk=None):
    """Draws `x ~ ZIMultinomial(n, r, w / sum(w))` per row, exactly.

    Compiled with XLA; static shapes, memory O(rows * (d + chunk * 128)).

    Args:
        weights: float tensor `[rows, d]` of non-negative weights (need not
            sum to one); converted to float64.
        total_count: trials `n` per row, shape `[rows]` or scalar.
        rate: zero-inflation rate `r` in [0, 1] per row, `[rows]` or scalar.
        seed: stateless seed, int tensor of shape `[2]`.
        chunk: Python int, trials drawn per loop iteration. Defaults to
            `chunk_size(max n, 1)` when `n` is a Python number, else 1024.

    Returns:
        int32 tensor `[rows, d]` of counts.
    """
    weights = tf.cast(weights, tf.float64)
    rows = weights.shape[0]
    if chunk is None:
        static_n = tf.get_static_value(total_count)
        chunk = 1024 if static_n is None else chunk_size(int(tf.reduce_max(static_n)), 1.0)
    total_count = tf.broadcast_to(tf.cast(total_count, tf.float64), [rows])
    rate = tf.broadcast_to(tf.cast(rate, tf.float64), [rows])
    seed = tf.cast(seed, tf.int32)
    return _sample_counts(weights, total_count, rate, seed, int(chunk))


@tf.function(jit_compile=True)
def grid_moves(gradients, rate, seed, trials, smoothing, unit, chunk):
    """The ZIM move `unit * x * sign(g)` for gradients sampled as one scope.

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over all of `gradients` together,
    `x ~ ZIMultinomial(trials, rate, q)`. If any gradient has a NaN or Inf,
    every move is zero (the step is skipped).

    Args:
        gradients: list of dense float tensors (any shapes).
        rate: float scalar tensor, clipped into [0, 1].
        seed: stateless seed, int tensor of shape `[2]`.
        trials: Python int `n`, or None for `d` (all gradient entries).
        smoothing: Python float `c >= 0`.
        unit: Python float, the grid step.
        chunk: Python int, trials drawn per loop iteration.

    Returns:
        List of moves, each shaped and typed like its gradient.
    """
    flat = [tf.reshape(tf.cast(g, tf.float64), [-1]) for g in gradients]
    sizes = [f.shape[0] for f in flat]
    flat = tf.concat(flat, axis=0)
    finite = tf.reduce_all(tf.math.is_finite(flat))
    flat = tf.where(finite, flat, 0.0)
    rate = tf.where(finite, tf.clip_by_value(tf.cast(rate, tf.float64), 0.0, 1.0), 0.0)
    trials = sum(sizes) if trials is None else trials
    weights = tf.abs(flat) + smoothing
    counts = _sample_counts(weights[None], tf.cast([trials], tf.float64), rate[None], seed, chunk)[0]
    moves = tf.cast(counts, tf.float64) * tf.sign(flat) * unit
    return [
        tf.reshape(tf.cast(m, g.dtype), g.shape)
        for m, g in zip(tf.split(moves, sizes), gradients)
    ]

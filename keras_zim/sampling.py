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
   `V ~ Uniform(0, 1]`, and `N` counts the partial sums of gaps that stay
   `<= n`. Gaps are drawn `chunk` at a time until a partial sum passes `n`,
   so any `N` is exact and one chunk almost always suffices.
2. Given `N`, each passing trial lands on `i` with probability `q_i`, by the
   inverse CDF in float64: `u ~ Uniform[0, sum(w))` walks down a 16-ary tree
   of partial sums (about log16(d) levels), at each level picking the child
   whose cumulative sum first exceeds `u`. Trials are placed `chunk` at a
   time, so memory is O(chunk * 16 + d), never O(n d).

Both stages are one search: "how many leading entries have an inclusive
prefix sum <= t", answered by `_count_prefix_at_most` on a `_SumTree`. The
tree keeps only block sums, never a prefix-sum array: XLA lowers `tf.cumsum`
to a reduce-window that is far slower than this on CPU, and each tree level
is one gather and one fused 16-step scan per trial.

Rows whose weights sum to zero have no direction and get zero counts, as do
rows holding a NaN or Inf (their total is not finite: the optimizer's skipped
step). The inverse CDF is exact up to float64 rounding of the partial sums
(relative error about 1e-16 per boundary); float32 sums would distort q by up
to 12% at d = 1e6.
"""

import math

import numpy as np
import tensorflow as tf

__all__ = [
    "chunk_size",
    "sample_counts",
    "grid_moves",
]

_FANOUT = 16
MAX_CHUNK = 1 << 16
SEARCH_CHUNK = 256


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


class _SumTree:
    """A 16-ary tree of float64 sums over each row of `leaves`.

    `weight(raw)` turns leaf values into float64 weights, with
    `weight(0) = 0` (the zero padding to a multiple of 16). Level 0 holds the
    leaves; each level above holds the sums of 16 entries of the one below,
    up to a single root per row.
    """

    def __init__(self, leaves, weight):
        self.rows, self.size = leaves.shape
        self.weight = weight
        self.levels = [self._grouped(leaves)]
        sums = self._children_sum(weight(self.levels[0]))
        while sums.shape[1] > 1:
            self.levels.append(self._grouped(sums))
            sums = self._children_sum(self.levels[-1])
        self.total = sums[:, 0]

    @staticmethod
    def _children_sum(grouped):
        """Sums over the last axis as 16 elementwise adds.

        XLA on CPU runs a reduction fused with its producer (here the float64
        cast and abs) as a scalar loop, 10x slower than this at d = 1e7.
        """
        total = grouped[..., 0]
        for k in range(1, _FANOUT):
            total += grouped[..., k]
        return total

    @staticmethod
    def _grouped(values):
        """`[rows, n]` padded with zeros and viewed as `[rows, ceil(n/16), 16]`."""
        groups = -(-values.shape[1] // _FANOUT)
        padded = tf.pad(values, [[0, 0], [0, groups * _FANOUT - values.shape[1]]])
        return tf.reshape(padded, [values.shape[0], groups, _FANOUT])

    def count_at_most(self, target):
        """Per `[rows, T]` target t: how many leading leaves have prefix sum <= t.

        Equals `size` when `t >= total`. Walks from the root to the leaves,
        subtracting the sums of the children passed over at each level.
        """
        node = tf.zeros(tf.shape(target), tf.int32)
        rows = tf.range(self.rows)[:, None]
        remaining = target
        for depth in reversed(range(len(self.levels))):
            level = self.levels[depth]
            flat = tf.reshape(level, [-1, _FANOUT])
            children = tf.gather(flat, rows * level.shape[1] + node)
            if depth == 0:
                children = self.weight(children)
            ends = children  # inclusive prefix sums of the 16 children, in 4 shifted adds
            for shift in (1, 2, 4, 8):
                ends += tf.pad(ends[..., :-shift], [[0, 0], [0, 0], [shift, 0]])
            at_most = ends <= remaining[..., None]
            chosen = tf.reduce_sum(tf.cast(at_most, tf.int32), axis=-1)
            passed = tf.reduce_max(tf.where(at_most, ends, 0.0), axis=-1)
            remaining -= passed
            node = node * _FANOUT + tf.minimum(chosen, _FANOUT - 1)
        return tf.where(target >= self.total[:, None], self.size, tf.minimum(node, self.size - 1))


def _passing_trials(total_count, rate, seed, stream, chunk):
    """N ~ Binomial(n, r) per row, by counting Geometric(r) gaps up to n."""
    rows = total_count.shape[0]
    log_fail = tf.math.log1p(-rate)[:, None]

    def more(step, position, count):
        return tf.reduce_any(position <= total_count)

    def draw(step, position, count):
        v = 1.0 - _uniform([rows, chunk], seed, stream, step)
        gaps = 1.0 + tf.math.floor(tf.math.log(v) / log_fail)
        gaps = tf.where(rate[:, None] > 0.0, gaps, math.inf)
        tree = _SumTree(gaps, tf.identity)
        room = (total_count - position)[:, None]
        count += tf.where(room[:, 0] >= 0.0, tree.count_at_most(room)[:, 0], 0)
        return step + 1, position + tree.total, count

    start = (tf.constant(0), tf.zeros_like(total_count), tf.zeros([rows], tf.int32))
    return tf.while_loop(more, draw, start)[2]


def _scatter_trials(counts, trials, chunk, draw_index):
    """Adds `trials[row]` trials per row to flat `counts`, `chunk` at a time.

    `draw_index(step)` gives `[rows, chunk]` leaf indices for loop step `step`.
    """
    rows = trials.shape[0]
    size = counts.shape[0] // rows
    row_start = tf.range(rows)[:, None] * size

    def more(step, counts):
        return tf.reduce_any(step * chunk < trials)

    def place(step, counts):
        live = step * chunk + tf.range(chunk)[None, :] < trials[:, None]
        flat_index = tf.reshape(row_start + draw_index(step), [-1, 1])
        return step + 1, tf.tensor_scatter_nd_add(counts, flat_index, tf.cast(tf.reshape(live, [-1]), tf.int32))

    return tf.while_loop(more, place, (tf.constant(0), counts))[1]


def _counts(magnitudes, smoothing, total_count, rate, seed, chunk):
    """Counts for `q_i = (|m_i| + c) / (||m||_1 + c d)` per row; see the module doc.

    `q` is the mixture `s / d + (1 - s) |m_i| / ||m||_1` with uniform share
    `s = c d / (||m||_1 + c d)`, so each trial is a no-op (1 - r), a uniform
    trial (r s: one random index, no search) or a searched trial (r (1 - s):
    the inverse CDF of |m| on the sum tree). With the default smoothing and
    gradients well below 1 in magnitude nearly every trial is uniform.
    """
    rows, size = magnitudes.shape
    tree = _SumTree(magnitudes, lambda raw: tf.abs(tf.cast(raw, tf.float64)))
    mass, spread = tree.total, smoothing * size
    # A NaN or Inf makes the mass non-finite; a zero total has no direction.
    usable = tf.math.is_finite(mass) & (mass + spread > 0.0)
    share = tf.where(usable, spread / (mass + spread), 0.0)
    search_rate = tf.where(usable, rate * (1.0 - share), 0.0)
    searched = _passing_trials(total_count, search_rate, seed, 0, min(chunk, SEARCH_CHUNK))
    rest = 1.0 - search_rate  # (no-op, uniform, searched) ~ Multinomial: thin the rest
    uniform_rate = tf.where(usable & (rest > 0.0), tf.clip_by_value(rate * share / rest, 0.0, 1.0), 0.0)
    uniform = _passing_trials(total_count - tf.cast(searched, tf.float64), uniform_rate, seed, 1, chunk)

    def uniform_index(step):
        key = tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(seed, 2), step)
        return tf.random.stateless_uniform([rows, chunk], key, 0, size, tf.int32, alg="philox")

    def searched_index(step):
        u = _uniform([rows, min(chunk, SEARCH_CHUNK)], seed, 3, step) * mass[:, None]
        return tf.minimum(tree.count_at_most(u), size - 1)

    counts = tf.zeros([rows * size], tf.int32)
    counts = _scatter_trials(counts, uniform, chunk, uniform_index)
    counts = _scatter_trials(counts, searched, min(chunk, SEARCH_CHUNK), searched_index)
    return tf.reshape(counts, [rows, size])


# The hot path compiles with XLA; one-off draws (initialisers) skip the
# seconds that tracing and compiling a new shape cost and run op by op.
_sample_counts = tf.function(_counts, jit_compile=True, autograph=False)


def sample_counts(weights, total_count, rate, seed, chunk=None, smoothing=0.0, jit_compile=True):
    """Draws `x ~ ZIMultinomial(n, r, q)` per row, exactly, `q ~ |w| + c`.

    Compiled with XLA; static shapes, memory O(rows * (d + chunk * 16)).

    Args:
        weights: float tensor `[rows, d]` of non-negative weights (need not
            sum to one), or of magnitudes whose absolute values are used.
        total_count: trials `n` per row, shape `[rows]` or scalar.
        rate: zero-inflation rate `r` in [0, 1] per row, `[rows]` or scalar.
        seed: stateless seed, int tensor of shape `[2]`.
        chunk: Python int, trials drawn per loop iteration. Defaults to
            `chunk_size(max n, 1)` when `n` is a Python number, else 1024.
        smoothing: `c >= 0` added to every `|w_i|`. Defaults to `0.0`.
        jit_compile: compile with XLA (fast draws, a few seconds to compile
            each new shape) or run op by op (no compile; for one-off draws).
            Defaults to `True`.

    Returns:
        int32 tensor `[rows, d]` of counts. Rows whose weights sum to zero, or
        hold a NaN or Inf, get zero counts.
    """
    weights = tf.convert_to_tensor(weights)
    if not weights.dtype.is_floating:
        weights = tf.cast(weights, tf.float64)
    rows = weights.shape[0]
    if chunk is None:
        static_n = tf.get_static_value(total_count)
        chunk = 1024 if static_n is None else chunk_size(int(np.max(static_n)), 1.0)
    total_count = tf.broadcast_to(tf.cast(total_count, tf.float64), [rows])
    rate = tf.broadcast_to(tf.cast(rate, tf.float64), [rows])
    seed = tf.cast(seed, tf.int32)
    smoothing = tf.constant(float(smoothing), tf.float64)  # a tensor: no retrace per value
    sampler = _sample_counts if jit_compile else _counts
    return sampler(weights, smoothing, total_count, rate, seed, int(chunk))


@tf.function(jit_compile=True, autograph=False)
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
    dtype = tf.float64 if any(g.dtype == tf.float64 for g in gradients) else tf.float32
    flat = [tf.reshape(tf.cast(g, dtype), [-1]) for g in gradients]
    sizes = [f.shape[0] for f in flat]
    flat = tf.concat(flat, axis=0)
    rate = tf.clip_by_value(tf.cast(rate, tf.float64), 0.0, 1.0)
    trials = sum(sizes) if trials is None else trials
    counts = _sample_counts(flat[None], smoothing, tf.cast([trials], tf.float64), rate[None], seed, chunk)
    # Where no trial landed the move is 0, even where g is NaN (sign(NaN) * 0 is NaN).
    moves = tf.where(counts[0] > 0, tf.cast(counts[0], dtype) * tf.sign(flat) * unit, 0.0)
    return [
        tf.reshape(tf.cast(m, g.dtype), g.shape)
        for m, g in zip(tf.split(moves, sizes), gradients)
    ]

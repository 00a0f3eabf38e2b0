"""The exact zero-inflated multinomial sampler: pure tensor functions.

Everything in keras_zim that draws (the optimizer, the distribution and the
initialiser) goes through `draw_trials`: it draws only the passing trials and
hands them, a chunk of category indices at a time, to a `place` function.
`sample_counts` and `grid_moves` add them up into dense counts and moves; the
optimizer writes each one straight into its variable. Data flows one way:
gradient -> weights -> trials -> counts or moves.

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
prefix sum <= t", answered by `_SumTree.count_at_most`. The tree keeps only
block sums, never a prefix-sum array: XLA lowers `tf.cumsum` to a
reduce-window that is far slower than this on CPU. Each level costs one
gather of 16 children and 16 elementwise steps per trial; why the levels are
walked in a loop is in `count_at_most` (docs/sampler.md has the numbers).

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
    "draw_trials",
    "draw_moves",
    "flat_gradients",
    "grid_moves",
]

_FANOUT = 16
MAX_CHUNK = 1 << 16
SEARCH_CHUNK = 1 << 12


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
    `weight(0) = 0` (the zero padding to a multiple of 16). The leaves stay
    as given, grouped `[rows, groups, 16]`; the levels above hold the sums
    of 16 entries of the one below, up to a single root per row, and are
    stacked top first in one `[nodes, 16]` table so that one loop walks them.
    """

    def __init__(self, leaves, weight):
        self.rows, self.size = leaves.shape
        self.weight = weight
        self.leaves = self._grouped(leaves)
        sums = tf.reduce_sum(weight(self.leaves), axis=-1)
        upper = []
        while sums.shape[1] > 1:
            upper.insert(0, self._grouped(sums))
            sums = tf.reduce_sum(upper[0], axis=-1)
        self.total = sums[:, 0]
        self.groups = [level.shape[1] for level in upper]
        self.table = tf.concat([tf.reshape(level, [-1, _FANOUT]) for level in upper] + [tf.zeros([0, _FANOUT], tf.float64)], axis=0)

    @staticmethod
    def _grouped(values):
        """`[rows, n]` padded with zeros and viewed as `[rows, ceil(n/16), 16]`."""
        groups = -(-values.shape[1] // _FANOUT)
        padded = tf.pad(values, [[0, 0], [0, groups * _FANOUT - values.shape[1]]])
        return tf.reshape(padded, [values.shape[0], groups, _FANOUT])

    @staticmethod
    def _descend(children, remaining):
        """The child `[M]` holding each target, and the sum of the children before it.

        `children` is `[M, 16]`. Runs on the transposed children as 16
        elementwise steps: XLA on CPU runs a reduction fused with its
        producer as a scalar loop (about 25x slower here).
        """
        columns = tf.transpose(children)
        end = tf.zeros_like(remaining)
        chosen = tf.zeros(tf.shape(remaining), tf.int32)
        passed = tf.zeros_like(remaining)
        for k in range(_FANOUT):
            end += columns[k]
            at_most = end <= remaining
            chosen += tf.cast(at_most, tf.int32)
            passed = tf.where(at_most, end, passed)
        return tf.minimum(chosen, _FANOUT - 1), passed

    def count_at_most(self, target):
        """Per `[rows, T]` target t: how many leading leaves have prefix sum <= t.

        Equals `size` when `t >= total`. Walks from the root to the leaves,
        subtracting the sums of the children passed over at each level. The
        levels are walked in a `tf.while_loop` on purpose: its carried node
        and remainder are kept in memory, where straight-line code lets XLA
        fuse each level's 16 steps into the next level's gather and redo them
        for every one of the 16 children, level after level (4-7x slower
        at d = 1e7).
        """
        shape = tf.shape(target)
        row = tf.reshape(tf.range(self.rows)[:, None] + tf.zeros(shape, tf.int32), [-1])
        start = tf.constant(np.cumsum([0] + self.groups[:-1]) * self.rows, tf.int32)  # each level's first row
        groups = tf.constant(self.groups + [self.leaves.shape[1]], tf.int32)

        def level(depth, node, remaining):
            children = tf.gather(self.table, start[depth] + row * groups[depth] + node)
            chosen, passed = self._descend(children, remaining)
            # A target at or past the total runs off the padded end: stay in range.
            return depth + 1, tf.minimum(node * _FANOUT + chosen, groups[depth + 1] - 1), remaining - passed

        node = tf.zeros_like(row)
        remaining = tf.reshape(target, [-1])
        if self.groups:
            _, node, remaining = tf.while_loop(
                lambda depth, node, remaining: depth < len(self.groups), level, (tf.constant(0), node, remaining)
            )
        leaves = tf.reshape(self.leaves, [-1, _FANOUT])
        children = self.weight(tf.gather(leaves, row * self.leaves.shape[1] + node))
        chosen, _ = self._descend(children, remaining)
        node = tf.reshape(node * _FANOUT + chosen, shape)
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


def _each_chunk(trials, chunk, draw_index, place, state):
    """Hands `trials[row]` trials per row to `place`, `chunk` at a time.

    `draw_index(step)` gives `[rows, chunk]` leaf indices for loop step
    `step`; `place(index, live, state)` returns the new state, where `live`
    marks the indices that are real trials (the rest of the last chunk is not).
    """

    def more(step, state):
        return tf.reduce_any(step * chunk < trials)

    def body(step, state):
        live = step * chunk + tf.range(chunk)[None, :] < trials[:, None]
        return step + 1, place(draw_index(step), live, state)

    return tf.while_loop(more, body, (tf.constant(0), state))[1]


def draw_trials(magnitudes, smoothing, total_count, rate, seed, chunk, place, state, relative=False):
    """Draws the passing trials of `ZIMultinomial(n, r, q)`, `q ~ |m| + c`, per row.

    `q` is the mixture `s / d + (1 - s) |m_i| / ||m||_1` with uniform share
    `s = c d / (||m||_1 + c d)`, so each trial is a no-op (1 - r), a uniform
    trial (r s: one random index, no search) or a searched trial (r (1 - s):
    the inverse CDF of |m| on the sum tree). With the default smoothing and
    gradients well below 1 in magnitude nearly every trial is uniform. Only
    the passing trials are drawn: O(d) to build the tree, then O(log d) per
    trial, never O(n).

    Args:
        magnitudes: float `[rows, d]`; their absolute values are used.
        smoothing: float64 scalar `c >= 0`.
        total_count: float64 `[rows]`, trials `n`.
        rate: float64 `[rows]`, `r` in [0, 1].
        seed: stateless seed, int32 `[2]`.
        chunk: Python int, trials drawn per loop step.
        place: `place(index, live, state) -> state`, called with int32
            `[rows, chunk]` category indices in `[0, d)` and a bool mask of
            the same shape marking real trials; each live index is one
            trial landing on that category.
        state: the initial state (any nest of tensors).
        relative: Python bool; if True, `c` is in units of the row's mean
            `|m|` (the uniform share is `c / (1 + c)` whatever the scale).

    Returns:
        The final state. Rows whose magnitudes sum to zero, or hold a NaN or
        Inf, get no trials.
    """
    rows, size = magnitudes.shape
    tree = _SumTree(magnitudes, lambda raw: tf.abs(tf.cast(raw, tf.float64)))
    mass = tree.total
    spread = smoothing * mass if relative else smoothing * size
    # A NaN or Inf makes the mass non-finite; a zero total has no direction.
    usable = tf.math.is_finite(mass) & (mass + spread > 0.0)
    share = tf.where(usable, spread / (mass + spread), 0.0)
    search_rate = tf.where(usable, rate * (1.0 - share), 0.0)
    search_chunk = min(chunk, SEARCH_CHUNK)  # searched trials are about half of all, or fewer
    searched = _passing_trials(total_count, search_rate, seed, 0, search_chunk)
    rest = 1.0 - search_rate  # (no-op, uniform, searched) ~ Multinomial: thin the rest
    uniform_rate = tf.where(usable & (rest > 0.0), tf.clip_by_value(rate * share / rest, 0.0, 1.0), 0.0)
    uniform = _passing_trials(total_count - tf.cast(searched, tf.float64), uniform_rate, seed, 1, chunk)

    def uniform_index(step):
        key = tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(seed, 2), step)
        return tf.random.stateless_uniform([rows, chunk], key, 0, size, tf.int32, alg="philox")

    def searched_index(step):
        u = _uniform([rows, search_chunk], seed, 3, step) * mass[:, None]
        return tf.minimum(tree.count_at_most(u), size - 1)

    state = _each_chunk(uniform, chunk, uniform_index, place, state)
    return _each_chunk(searched, search_chunk, searched_index, place, state)


def _counts(magnitudes, smoothing, total_count, rate, seed, chunk):
    """`[rows, d]` int32 counts of the trials `draw_trials` draws."""
    rows, size = magnitudes.shape
    row_start = tf.range(rows)[:, None] * size

    def add(index, live, counts):
        flat_index = tf.reshape(row_start + index, [-1, 1])
        return tf.tensor_scatter_nd_add(counts, flat_index, tf.cast(tf.reshape(live, [-1]), tf.int32))

    counts = tf.zeros([rows * size], tf.int32)
    counts = draw_trials(magnitudes, smoothing, total_count, rate, seed, chunk, add, counts)
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


def flat_gradients(gradients):
    """The gradients as one vector (float64 if any is, else float32) and their sizes."""
    dtype = tf.float64 if any(g.dtype == tf.float64 for g in gradients) else tf.float32
    flat = [tf.reshape(tf.cast(g, dtype), [-1]) for g in gradients]
    return tf.concat(flat, axis=0), [f.shape[0] for f in flat]


def draw_moves(flat, rate, seed, trials, smoothing, chunk, place, state, relative_smoothing=False):
    """Draws the ZIM trials for one scope's gradient `flat` (a vector).

    `q_i = (|g_i| + c) / (||g||_1 + c d)`, `x ~ ZIMultinomial(n, r, q)`:
    calls `place(index, live, state)` with `[chunk]` indices and masks as in
    `draw_trials`; each live index is one move of one unit against
    `sign(g_index)`. `rate` is clipped into [0, 1]; `trials` None means `d`.
    """
    rate = tf.clip_by_value(tf.cast(rate, tf.float64), 0.0, 1.0)
    trials = flat.shape[0] if trials is None else trials
    one_row = lambda index, live, state: place(index[0], live[0], state)  # noqa: E731
    return draw_trials(
        flat[None], tf.constant(float(smoothing), tf.float64), tf.constant([float(trials)], tf.float64),
        rate[None], seed, chunk, one_row, state, relative_smoothing,
    )


@tf.function(jit_compile=True, autograph=False)
def grid_moves(gradients, rate, seed, trials, smoothing, unit, chunk):
    """The ZIM move `unit * x * sign(g)` for gradients sampled as one scope.

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over all of `gradients` together,
    `x ~ ZIMultinomial(trials, rate, q)`. If any gradient has a NaN or Inf,
    every move is zero (the step is skipped). The optimizer applies the same
    draw in place (`keras_zim.ZIM`); this dense form returns it.

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
    flat, sizes = flat_gradients(gradients)

    def add(index, live, counts):
        return tf.tensor_scatter_nd_add(counts, index[:, None], tf.cast(live, tf.int32))

    counts = draw_moves(flat, rate, seed, trials, smoothing, chunk, add, tf.zeros(flat.shape, tf.int32))
    # Where no trial landed the move is 0, even where g is NaN (sign(NaN) * 0 is NaN).
    moves = tf.where(counts > 0, tf.cast(counts, flat.dtype) * tf.sign(flat) * unit, 0.0)
    return [
        tf.reshape(tf.cast(m, g.dtype), g.shape)
        for m, g in zip(tf.split(moves, sizes), gradients)
    ]

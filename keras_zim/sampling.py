"""The exact zero-inflated multinomial sampler: pure tensor functions.

Everything in keras_zim that draws (the optimizer, the distribution and the
initialiser) goes through `draw_counts`: one call draws the counts of every
segment of a flat vector (one segment for ZIM's global scope, one per
variable for its variable scope, one per row for the distribution) into one
int32 count vector. Data flows one way: magnitudes -> segment masses ->
trial counts -> trial positions -> counts.

#### Mathematical details

For a segment's non-negative weights `w` (for ZIM, `w_i = |g_i| + c`),
`q = w / sum(w)`, trials `n` and rate `r`:

```none
x ~ Multinomial(n, [1 - r, r q_1, ..., r q_d]),  the no-op count x_0 dropped.
```

It is drawn exactly, in stages that compose to that law:

1. The passing trials `N ~ Binomial(n, r)`, then how many of them are
   uniform, `U ~ Binomial(N, s)`: `q` is the mixture
   `s / d + (1 - s) |m_i| / ||m||_1` with uniform share
   `s = c d / (||m||_1 + c d)`. Binomials are drawn exactly, by inversion for
   `n p < 10` and by Hormann's BTRS rejection otherwise: O(1) per segment,
   whatever `n`.
2. The `U` uniform trials land on `floor(u d)`, `u ~ Uniform[0, 1)`: no search.
3. The `N - U` searched trials land on `i` with probability `|m_i| / ||m||_1`
   by the inverse CDF in float64: `u ~ Uniform[0, ||m||_1)` walks down a
   16-ary tree of the segment's partial sums (log16(d) levels).

Every trial is one scatter-add into the count vector: O(d) to build the
trees, O(1) per uniform trial and O(log d) per searched trial, independent of
the number of segments. Segments whose weights sum to zero, or hold a NaN or
Inf, get zero counts (the optimizer's skipped step). The inverse CDF is exact
up to float64 rounding of the partial sums (relative error about 1e-16 per
boundary); docs/sampler.md has the design and the measurements.
"""

import math

import numpy as np
import tensorflow as tf

__all__ = [
    "binomial",
    "chunk_size",
    "Segments",
    "draw_counts",
    "flat_gradients",
    "grid_moves",
    "sample_counts",
    "scope_counts",
]

_FANOUT = 16
MAX_CHUNK = 1 << 24
SEARCH_CHUNK = 1 << 12


def chunk_size(total_count, rate):
    """Static number of trials of a segment placed per loop iteration.

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


def _stream(seed, stream):
    """The key of one stream of draws, `stream` a Python int; fold it outside loops."""
    return tf.random.experimental.stateless_fold_in(seed, stream)


def _uniform(shape, key, step):
    """Float64 Uniform[0, 1) keyed on (stream key, step), stateless."""
    key = tf.random.experimental.stateless_fold_in(key, step)
    return tf.random.stateless_uniform(shape, key, dtype=tf.float64, alg="philox")


# ------------------------------------------------------------------ binomials

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# log(k!) minus its Stirling approximation, exactly for small k.
_STIRLING_TABLE = [math.lgamma(k + 1.0) - ((k + 0.5) * math.log(k + 1.0) - (k + 1.0) + _LOG_SQRT_2PI) for k in range(10)]


def _stirling_error(k):
    """`log(k!) - ((k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2)`, float64."""
    table = tf.gather(tf.constant(_STIRLING_TABLE, tf.float64), tf.cast(tf.clip_by_value(k, 0.0, 9.0), tf.int32))
    x = 1.0 / (k + 1.0)
    x2 = x * x
    series = (1.0 / 12.0 - (1.0 / 360.0 - x2 / 1260.0) * x2) * x
    return tf.where(k < 10.0, table, series)


def _inversion(count, prob, seed):
    """Sequential inversion of the Binomial CDF, for `n p < 10`: the start `(k, pmf, cdf)`, `going` and `step`."""
    u = _uniform(tf.shape(count), _stream(seed, 0), 0)
    ratio = prob / (1.0 - prob)
    pmf = tf.exp(count * tf.math.log1p(-prob))

    def going(k, pmf, cdf):
        return (u >= cdf) & (k < count) & (pmf > 0.0)

    def step(k, pmf, cdf):
        more = going(k, pmf, cdf)
        nxt = pmf * ratio * (count - k) / (k + 1.0)
        return tf.where(more, k + 1.0, k), tf.where(more, nxt, pmf), tf.where(more, cdf + nxt, cdf)

    return (tf.zeros_like(count), pmf, pmf), going, step


def _btrs(count, prob, seed):
    """Transformed rejection with squeeze (Hormann 1993, BTRS), for `n p >= 10`, `p <= 1/2`: one attempt."""
    n, p = count, prob
    spq = tf.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    odds = p / (1.0 - p)
    m = tf.floor((n + 1.0) * p)
    fixed = (m + 0.5) * tf.math.log((m + 1.0) / (odds * (n - m + 1.0))) + _stirling_error(m) + _stirling_error(n - m)

    key = _stream(seed, 1)

    def attempt(step, k, done):
        u, v = tf.unstack(_uniform(tf.concat([[2], tf.shape(n)], 0), key, step))
        u = u - 0.5
        us = 0.5 - tf.abs(u)
        candidate = tf.floor((2.0 * a / us + b) * u + c)
        inside = (candidate >= 0.0) & (candidate <= n)
        squeeze = (us >= 0.07) & (v <= v_r)
        safe = tf.clip_by_value(candidate, 0.0, n)
        bound = (
            fixed
            + (n + 1.0) * tf.math.log((n - m + 1.0) / (n - safe + 1.0))
            + (safe + 0.5) * tf.math.log(odds * (n - safe + 1.0) / (safe + 1.0))
            - _stirling_error(safe)
            - _stirling_error(n - safe)
        )
        accept = inside & (squeeze | (tf.math.log(v * alpha / (a / (us * us) + b)) <= bound))
        return tf.where(accept & ~done, candidate, k), done | accept

    return attempt


def binomial(count, prob, seed):
    """Exact `Binomial(count, prob)` draws, elementwise, as float64.

    Inversion where `count * min(p, 1 - p) < 10`, BTRS rejection elsewhere
    (both in one `tf.while_loop`); exact up to float64 rounding. `count`
    must be whole and `>= 0`; `prob` is clipped into [0, 1].

    Args:
        count: float64 tensor of trial counts.
        prob: float64 tensor of success probabilities, same shape.
        seed: stateless seed, int32 `[2]`.

    Returns:
        float64 tensor of whole numbers in `[0, count]`.
    """
    prob = tf.clip_by_value(prob, 0.0, 1.0)
    flip = prob > 0.5
    p = tf.where(flip, 1.0 - prob, prob)
    small = count * p < 10.0
    zero = tf.zeros_like(count)
    inverted, going, invert = _inversion(tf.where(small, count, zero), tf.where(small, p, zero), seed)
    attempt = _btrs(
        tf.where(small, zero + 20.0, count), tf.where(small, zero + 0.5, p),
        tf.random.experimental.stateless_fold_in(seed, 1),
    )

    def more(step, inverted, rejected, done):
        return tf.reduce_any(going(*inverted)) | tf.reduce_any(~done)

    def body(step, inverted, rejected, done):
        return (step + 1, invert(*inverted)) + attempt(step, rejected, done)

    _, inverted, rejected, _ = tf.while_loop(more, body, (tf.constant(0), inverted, zero, small))
    draws = tf.where(small, inverted[0], rejected)
    draws = tf.where((p > 0.0) & (count > 0.0), draws, zero)
    return tf.where(flip, count - draws, draws)


# ------------------------------------------------------------ segment trees


class Segments:
    """Static segments of a flat vector, for `draw_counts`: groups of equal-sized, contiguous segments.

    `groups` is a list of `(start, count, size)`: `count` segments of `size`
    cells each, the first at `start`. The flat vector is their concatenation
    in any order; cells outside every segment are never drawn.
    """

    def __init__(self, groups):
        self.groups = [(int(a), int(b), int(c)) for a, b, c in groups]
        self.count = sum(count for _, count, _ in self.groups)
        starts = [start + j * size for start, count, size in self.groups for j in range(count)]
        sizes = [size for _, count, size in self.groups for _ in range(count)]
        self.starts = np.asarray(starts, np.int32)
        self.sizes = np.asarray(sizes, np.int64)


class _SegmentTree:
    """16-ary float64 sum trees, one per segment, walked together.

    The leaves are the cells themselves, read in place; the first level holds
    the sums of 16 consecutive cells, each level above the sums of 16 entries
    of the one below (zero-padded), up to one root per segment. Shallower
    segments get single-child levels on top, so that every segment has
    `depth` levels and one `tf.while_loop` walks them all; the levels sit top
    first in one `[nodes, 16]` table, indexed by per-segment offsets.
    """

    def __init__(self, values, layout, weight):
        self.weight, self.values = weight, values
        per_group = []  # per group: (blocks per segment, upper levels top first, totals)
        for start, count, size in layout.groups:
            cells = tf.reshape(values[start : start + count * size], [count, size])
            sums = self._block_sums(weight(cells))
            blocks, upper = sums.shape[1], []
            while sums.shape[1] > 1:
                upper.insert(0, self._grouped(sums))
                sums = tf.reduce_sum(upper[0], axis=-1)
            per_group.append((blocks, upper, sums[:, 0]))
        self.total = tf.concat([total for _, _, total in per_group], axis=0)
        self.depth = max(len(upper) for _, upper, _ in per_group)
        pieces, starts = [], np.zeros([self.depth, layout.count], np.int32)
        widths = np.zeros([self.depth + 1, layout.count], np.int32)
        offset = 0
        for level in range(self.depth):
            first = 0
            for (blocks, upper, total), (_, count, _) in zip(per_group, layout.groups):
                missing = self.depth - len(upper)
                if level < missing:  # a single child holding the whole total
                    nodes = tf.pad(total[:, None, None], [[0, 0], [0, 0], [0, _FANOUT - 1]])
                else:
                    nodes = upper[level - missing]
                starts[level, first : first + count] = offset + np.arange(count) * nodes.shape[1]
                widths[level, first : first + count] = nodes.shape[1]
                pieces.append(tf.reshape(nodes, [-1, _FANOUT]))
                offset += count * nodes.shape[1]
                first += count
        first = 0
        for (blocks, _, _), (_, count, _) in zip(per_group, layout.groups):
            widths[self.depth, first : first + count] = blocks
            first += count
        self.table = tf.concat(pieces + [tf.zeros([0, _FANOUT], tf.float64)], axis=0)
        self.starts, self.widths = tf.constant(starts), tf.constant(widths)
        self.cell_starts = tf.constant(layout.starts)
        self.sizes = tf.constant(layout.sizes.astype(np.int32))

    @staticmethod
    def _block_sums(cells):
        """`[rows, ceil(n/16)]` sums of 16 consecutive entries of `[rows, n]`, without a padded copy."""
        rows, size = cells.shape
        whole = size // _FANOUT * _FANOUT
        parts = []
        if whole:
            parts.append(tf.reduce_sum(tf.reshape(cells[:, :whole], [rows, whole // _FANOUT, _FANOUT]), axis=-1))
        if whole < size:
            parts.append(tf.reduce_sum(cells[:, whole:], axis=-1, keepdims=True))
        return tf.concat(parts, axis=1) if len(parts) > 1 else parts[0]

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

    def locate(self, segment, target):
        """The cell `[T]` of each target: the first whose inclusive prefix sum exceeds it.

        `segment` is int32 `[T]`, `target` float64 `[T]` in `[0, total)` of
        its segment. Walks from the roots to the leaves, subtracting the sums
        of the children passed over. The levels are walked in a
        `tf.while_loop` on purpose: straight-line code lets XLA fuse each
        level's 16 steps into the next level's gather and redo them for every
        one of the 16 children (4-7x slower at d = 1e7).
        """

        def level(depth, node, remaining):
            children = tf.gather(self.table, tf.gather(self.starts[depth], segment) + node)
            chosen, passed = self._descend(children, remaining)
            below = tf.gather(self.widths[depth + 1], segment) - 1
            return depth + 1, tf.minimum(node * _FANOUT + chosen, below), remaining - passed

        node = tf.zeros_like(segment)
        if self.depth:
            _, node, target = tf.while_loop(
                lambda depth, node, remaining: depth < self.depth, level, (tf.constant(0), node, target)
            )
        # The leaves are read in place: 16 cells from the segment's start, zero past its end.
        cell = node[:, None] * _FANOUT + tf.range(_FANOUT)[None, :]
        inside = cell < tf.gather(self.sizes, segment)[:, None]
        flat = tf.gather(self.cell_starts, segment)[:, None] + tf.where(inside, cell, 0)
        children = tf.where(inside, self.weight(tf.gather(self.values, flat)), tf.zeros([], tf.float64))
        chosen, _ = self._descend(children, target)
        return node * _FANOUT + chosen


# ------------------------------------------------------------------- drawing


def _place_uniform(counts, layout, uniform, slots, seed):
    """Adds `uniform[s]` uniform trials to each segment `s`, `slots[g]` per segment of group `g` a round."""
    dump = counts.shape[0] - 1
    bounds = [0] + list(np.cumsum([count for _, count, _ in layout.groups]))
    slot_per_segment = tf.constant(
        np.concatenate([np.full(count, k, np.float64) for (_, count, _), k in zip(layout.groups, slots)]), tf.float64
    )

    def more(step, counts):
        return tf.reduce_any(tf.cast(step, tf.float64) * slot_per_segment < uniform)

    key = _stream(seed, 3)
    sizes = [count * k for (_, count, _), k in zip(layout.groups, slots)]

    def body(step, counts):
        draws = tf.split(_uniform([sum(sizes)], key, step), sizes)  # one Philox call for every group
        indices = []
        for g, ((start, count, size), k) in enumerate(zip(layout.groups, slots)):
            local = tf.minimum(tf.cast(tf.floor(tf.reshape(draws[g], [count, k]) * size), tf.int32), size - 1)
            rank = tf.cast(step * k + tf.range(k), tf.float64)
            live = rank[None, :] < uniform[bounds[g] : bounds[g + 1], None]
            cell = start + tf.range(count)[:, None] * size + local
            indices.append(tf.reshape(tf.where(live, cell, dump), [-1]))
        index = tf.concat(indices, axis=0)
        return step + 1, tf.tensor_scatter_nd_add(counts, index[:, None], tf.ones_like(index))

    return tf.while_loop(more, body, (tf.constant(0), counts))[1]


def _place_searched(counts, layout, tree, searched, seed, chunk):
    """Adds `searched[s]` trials to each segment `s`, landing on cell `i` with probability `|m_i| / ||m||_1`."""
    dump = counts.shape[0] - 1
    total = tf.reduce_sum(searched)
    if layout.count > 1:  # which segment each trial belongs to: a tree over the segments' counts
        owners = _SegmentTree(searched, Segments([(0, 1, layout.count)]), tf.identity)

    key = _stream(seed, 2)

    def more(step, counts):
        return tf.cast(step * chunk, tf.float64) < total

    def body(step, counts):
        rank = tf.cast(step * chunk + tf.range(chunk), tf.float64)
        if layout.count > 1:
            segment = tf.minimum(owners.locate(tf.zeros([chunk], tf.int32), rank), layout.count - 1)
        else:
            segment = tf.zeros([chunk], tf.int32)
        target = _uniform([chunk], key, step) * tf.gather(tree.total, segment)
        local = tf.minimum(tree.locate(segment, target), tf.gather(tree.sizes, segment) - 1)
        index = tf.where(rank < total, tf.gather(tree.cell_starts, segment) + local, dump)
        return step + 1, tf.tensor_scatter_nd_add(counts, index[:, None], tf.ones_like(index))

    return tf.while_loop(more, body, (tf.constant(0), counts))[1]


def draw_counts(magnitudes, layout, trials, rate, smoothing, seed, slots, search_chunk, relative=False):
    """Counts of `ZIMultinomial(n, r, q)`, `q ~ |m| + c`, for every segment of `layout`.

    Args:
        magnitudes: float `[L]`; their absolute values are used.
        layout: the `Segments` of `magnitudes` to draw in.
        trials: float64 `[segments]`, trials `n` per segment.
        rate: float64 `[segments]`, `r` in [0, 1].
        smoothing: float64 scalar `c >= 0`.
        seed: stateless seed, int32 `[2]`.
        slots: Python ints, uniform trials placed per segment and loop step,
            one per group of `layout`.
        search_chunk: Python int, searched trials placed per loop step.
        relative: Python bool; if True, `c` is in units of the segment's
            mean `|m|` (a uniform share of `c / (1 + c)` at any scale).

    Returns:
        int32 `[L]` counts. Segments whose magnitudes sum to zero, or hold a
        NaN or Inf, get none.
    """
    tree = _SegmentTree(magnitudes, layout, lambda raw: tf.abs(tf.cast(raw, tf.float64)))
    mass = tree.total
    spread = smoothing * (mass if relative else tf.constant(layout.sizes, tf.float64))
    # A NaN or Inf makes the mass non-finite; a zero total has no direction.
    usable = tf.math.is_finite(mass) & (mass + spread > 0.0)
    share = tf.where(usable, spread / (mass + spread), 0.0)
    fold = tf.random.experimental.stateless_fold_in
    passing = binomial(trials, tf.where(usable, rate, 0.0), fold(seed, -1))
    uniform = binomial(passing, share, fold(seed, -2))
    counts = tf.zeros([magnitudes.shape[0] + 1], tf.int32)  # the last cell takes the dead slots
    counts = _place_uniform(counts, layout, uniform, slots, seed)
    counts = _place_searched(counts, layout, tree, passing - uniform, seed, search_chunk)
    return counts[:-1]


def _counts(weights, smoothing, total_count, rate, seed, chunk):
    """`[rows, d]` int32 counts, one segment per row."""
    rows, size = weights.shape
    layout = Segments([(0, rows, size)])
    counts = draw_counts(
        tf.reshape(weights, [-1]), layout, total_count, rate, smoothing, seed, [chunk], min(chunk, SEARCH_CHUNK)
    )
    return tf.reshape(counts, [rows, size])


# The hot path compiles with XLA; one-off draws (initialisers) skip the
# seconds that tracing and compiling a new shape cost and run op by op.
_sample_counts = tf.function(_counts, jit_compile=True, autograph=False)


def sample_counts(weights, total_count, rate, seed, chunk=None, smoothing=0.0, jit_compile=True):
    """Draws `x ~ ZIMultinomial(n, r, q)` per row, exactly, `q ~ |w| + c`.

    Compiled with XLA; static shapes, memory O(rows * (d + chunk)).

    Args:
        weights: float tensor `[rows, d]` of non-negative weights (need not
            sum to one), or of magnitudes whose absolute values are used.
        total_count: trials `n` per row, shape `[rows]` or scalar.
        rate: zero-inflation rate `r` in [0, 1] per row, `[rows]` or scalar.
        seed: stateless seed, int tensor of shape `[2]`.
        chunk: Python int, trials of a row placed per loop iteration.
            Defaults to `chunk_size(max n, 1)` when `n` is a Python number,
            else 1024.
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


def scope_counts(gradients, scope, rate, seed, trials, smoothing, slots, relative=False):
    """ZIM trial counts for `gradients` as one scope (`"global"`) or one per gradient (`"variable"`).

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over each scope; `trials` and
    `slots` (uniform trials placed per loop step) hold Python ints, one per
    scope. In the variable scope the gradients are laid out by size, so that
    equal sizes form one group of segments and the draw compiles once per
    size, not once per variable.

    Returns:
        One flat int32 count tensor per gradient.
    """
    if scope == "global":
        order, groups = [0], None
        flat, sizes = flat_gradients(gradients)
        layout = Segments([(0, 1, flat.shape[0])])
    else:
        order = sorted(range(len(gradients)), key=lambda i: int(np.prod(gradients[i].shape)))
        flat, sizes = flat_gradients([gradients[i] for i in order])
        groups, start = [], 0
        for size in sizes:
            if groups and groups[-1][2] == size:
                groups[-1][1] += 1
            else:
                groups.append([start, 1, size])
            start += size
        layout = Segments(groups)
        trials = [trials[i] for i in order]
        slots = [max(slots[i] for i in order[first : first + count]) for first, (_, count, _) in zip(
            np.cumsum([0] + [g[1] for g in groups[:-1]]), groups)]
    rate = tf.clip_by_value(tf.cast(rate, tf.float64), 0.0, 1.0)
    counts = draw_counts(
        flat, layout, tf.constant(trials, tf.float64), tf.fill([layout.count], rate),
        tf.constant(float(smoothing), tf.float64), seed, slots, min(max(slots), SEARCH_CHUNK), relative,
    )
    pieces = tf.split(counts, sizes)
    if scope == "global":
        return pieces
    result = [None] * len(gradients)
    for position, i in enumerate(order):
        result[i] = pieces[position]
    return result


@tf.function(jit_compile=True, autograph=False)
def grid_moves(gradients, rate, seed, trials, smoothing, unit, chunk):
    """The ZIM move `unit * x * sign(g)` for gradients sampled as one scope.

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over all of `gradients` together,
    `x ~ ZIMultinomial(trials, rate, q)`. If any gradient has a NaN or Inf,
    every move is zero (the step is skipped). The optimizer applies the same
    draw (`keras_zim.ZIM`); this form returns it.

    Args:
        gradients: list of dense float tensors (any shapes).
        rate: float scalar tensor, clipped into [0, 1].
        seed: stateless seed, int tensor of shape `[2]`.
        trials: Python int `n`, or None for `d` (all gradient entries).
        smoothing: Python float `c >= 0`.
        unit: Python float, the grid step.
        chunk: Python int, trials placed per loop iteration.

    Returns:
        List of moves, each shaped and typed like its gradient.
    """
    trials = sum(int(np.prod(g.shape)) for g in gradients) if trials is None else trials
    counts = tf.concat(scope_counts(gradients, "global", rate, seed, [trials], smoothing, [chunk]), axis=0)
    flat, sizes = flat_gradients(gradients)
    # Where no trial landed the move is 0, even where g is NaN (sign(NaN) * 0 is NaN).
    moves = tf.where(counts > 0, tf.cast(counts, flat.dtype) * tf.sign(flat) * unit, 0.0)
    return [tf.reshape(tf.cast(m, g.dtype), g.shape) for m, g in zip(tf.split(moves, sizes), gradients)]

"""The exact zero-inflated multinomial sampler: pure `keras.ops` functions.

Everything in keras_zim that draws (the optimizer, the distribution and the
initialiser) goes through `draw_counts`: one call draws the counts of every
segment of a flat vector (one segment for ZIM's global scope, one per
variable for its variable scope, one per row for the distribution) into one
int32 count vector. It runs on every Keras backend; what differs per backend
is in `keras_zim.backend`.

#### Mathematical details

For a segment's magnitudes `m`, smoothing `c`, `q_i = (|m_i| + c) / (||m||_1 + c d)`,
trials `n` and rate `r`:

```none
x ~ Multinomial(n, [1 - r, r q_1, ..., r q_d]),  the no-op count x_0 dropped.
```

It is drawn in stages that compose to that law: first the passing trials
`N ~ Binomial(n, r)`, exactly (inversion for `n p < 10`, Hormann's BTRS
rejection otherwise: O(1) per segment); a share
`s = c d / (||m||_1 + c d)` of them lands uniformly on `floor(u d)` (no
search), the rest on `i` with probability `|m_i| / ||m||_1` by the inverse
CDF: a uniform target walks down a 16-ary tree of the segment's partial sums.
Every trial is one scatter-add into the count vector: O(d) to build the
trees and O(log d) per searched trial, independent of the number of
segments. Segments whose magnitudes sum to zero, or hold a NaN or Inf, get
zero counts (the optimizer's skipped step). Given a `rate_hint` (ZIM passes
its rate), groups of segments large and busy enough place most uniform
trials with `keras_zim.uniform_share`'s dense pass instead: one pass over
the cells, no scatter-add per trial.

Two precisions, chosen by `precision` (`"auto"`: float64 where the backend
has it enabled):

- `"float64"`: float64 partial sums; the uniform trials are
  `U ~ Binomial(N, s)`.
- `"float32x2"`, for TPUs and JAX without x64: no float64 anywhere. Partial
  sums, targets and `s` are double-float32 (hi + lo, about 48 bits); each
  passing trial is uniform with probability `s` to 2**-48 (a 48-bit
  threshold), and every cell's probability is within 1.1e-13 of `q_i`. `N`
  is drawn in float32 from pieces of at most 4,096 trials (its law exact up
  to float32 rounding).

docs/sampler.md has the design and the measurements.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_zim import backend
from keras_zim import uniform_share

__all__ = [
    "PRECISIONS",
    "binomial",
    "chunk_size",
    "Segments",
    "draw_counts",
    "flat_gradients",
    "grid_moves",
    "resolve_precision",
    "sample_counts",
    "scope_counts",
]

PRECISIONS = ("auto", "float64", "float32x2")
_FANOUT = 16
MAX_CHUNK = 1 << 24
SEARCH_CHUNK = 1 << 12
_ROW_CELLS = 1 << 14  # segments from this size get their block sums from their own tensor (`_SegmentTree`)
_PIECE = 1 << 12  # float32x2: binomial pieces small enough for float32


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


def resolve_precision(precision):
    """`"float64"` or `"float32x2"` for `precision` in `PRECISIONS` (`"auto"`: float64 if available)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Argument `precision` must be one of {PRECISIONS}. Received: precision={precision!r}")
    if precision == "auto":
        return "float64" if backend.has_float64() else "float32x2"
    return precision


def _stream(seed, stream):
    """The key of one stream of draws, `stream` a Python int; fold it outside loops."""
    return backend.fold_in(seed, stream)


def _uniform(shape, key, step, dtype="float64"):
    """Uniform[0, 1) keyed on (stream key, step), stateless."""
    return backend.uniform(shape, backend.fold_in(key, step), keras.backend.standardize_dtype(dtype))


# ------------------------------------------------------------------ binomials

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
# log(k!) minus its Stirling approximation, exactly for small k.
_STIRLING_TABLE = [math.lgamma(k + 1.0) - ((k + 0.5) * math.log(k + 1.0) - (k + 1.0) + _LOG_SQRT_2PI) for k in range(10)]


def _stirling_error(k):
    """`log(k!) - ((k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2)`, in `k`'s dtype."""
    table = ops.full_like(k, _STIRLING_TABLE[0])
    for j, value in enumerate(_STIRLING_TABLE[1:], 1):  # selects, not a gather: XLA fuses them into their users
        table = ops.where(k == j, value, table)
    x = 1.0 / (k + 1.0)
    x2 = x * x
    series = (1.0 / 12.0 - (1.0 / 360.0 - x2 / 1260.0) * x2) * x
    return ops.where(k < 10.0, table, series)


def _inversion(count, prob, seed):
    """Sequential inversion of the Binomial CDF, for `n p < 10`: the start `(k, pmf, cdf)`, `going` and `step`."""
    u = _uniform(ops.shape(count), _stream(seed, 0), 0, count.dtype)
    pmf = ops.exp(count * ops.log1p(-prob))
    constants = ops.stack([u, prob / (1.0 - prob), count])  # into the loop as one tensor: one kernel, not one each

    def going(k, pmf, cdf):
        u, _, count = ops.unstack(constants)
        return (u >= cdf) & (k < count) & (pmf > 0.0)

    def step(k, pmf, cdf):
        _, ratio, count = ops.unstack(constants)
        more = going(k, pmf, cdf)
        nxt = pmf * ratio * (count - k) / (k + 1.0)
        return ops.where(more, k + 1.0, k), ops.where(more, nxt, pmf), ops.where(more, cdf + nxt, cdf)

    return (ops.zeros_like(count), pmf, pmf), going, step


def _btrs(count, prob, seed):
    """Transformed rejection with squeeze (Hormann 1993, BTRS), for `n p >= 10`, `p <= 1/2`: one attempt."""
    n, p = count, prob
    spq = ops.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    odds = p / (1.0 - p)
    m = ops.floor((n + 1.0) * p)
    fixed = (m + 0.5) * ops.log((m + 1.0) / (odds * (n - m + 1.0))) + _stirling_error(m) + _stirling_error(n - m)
    constants = ops.stack([b, a, c, v_r, alpha, odds, m, fixed])  # one tensor into the loop, as in `_inversion`

    key = _stream(seed, 1)

    def attempt(step, k, done):
        b, a, c, v_r, alpha, odds, m, fixed = ops.unstack(constants)
        draws = _uniform((2,) + tuple(ops.shape(n)), key, step, n.dtype)
        u, v = draws[0] - 0.5, draws[1]
        us = 0.5 - ops.abs(u)
        candidate = ops.floor((2.0 * a / us + b) * u + c)
        inside = (candidate >= 0.0) & (candidate <= n)
        squeeze = (us >= 0.07) & (v <= v_r)
        safe = ops.clip(candidate, 0.0, n)
        bound = (
            fixed
            + (n + 1.0) * ops.log((n - m + 1.0) / (n - safe + 1.0))
            + (safe + 0.5) * ops.log(odds * (n - safe + 1.0) / (safe + 1.0))
            - _stirling_error(safe)
            - _stirling_error(n - safe)
        )
        accept = inside & (squeeze | (ops.log(v * alpha / (a / (us * us) + b)) <= bound))
        return ops.where(accept & ~done, candidate, k), done | accept

    return attempt


def binomial(count, prob, seed):
    """Exact `Binomial(count, prob)` draws, elementwise, in `count`'s float dtype.

    Inversion where `count * min(p, 1 - p) < 10`, BTRS rejection elsewhere
    (both in one while loop); exact up to the dtype's rounding. `count` must
    be whole and `>= 0`; `prob` is clipped into [0, 1].

    Args:
        count: float tensor of trial counts.
        prob: float tensor of success probabilities, same shape and dtype.
        seed: stateless seed, int32 `[2]`.

    Returns:
        Tensor of whole numbers in `[0, count]`, `count`'s dtype.
    """
    count = ops.convert_to_tensor(count)
    prob = ops.clip(ops.cast(prob, count.dtype), 0.0, 1.0)
    flip = prob > 0.5
    p = ops.where(flip, 1.0 - prob, prob)
    small = count * p < 10.0
    zero = ops.zeros_like(count)
    inverted, going, invert = _inversion(ops.where(small, count, zero), ops.where(small, p, zero), seed)
    attempt = _btrs(ops.where(small, zero + 20.0, count), ops.where(small, zero + 0.5, p), backend.fold_in(seed, 1))

    # The state is one stacked tensor: XLA builds it in one kernel a step, not one per part.
    def more(step, state):
        k, pmf, cdf, _, done = ops.unstack(state)
        return ops.any(going(k, pmf, cdf) | (done == 0.0))

    def body(step, state):
        k, pmf, cdf, rejected, done = ops.unstack(state)
        rejected, done = attempt(step, rejected, done > 0.0)
        return step + 1, ops.stack(list(invert(k, pmf, cdf)) + [rejected, ops.cast(done, count.dtype)])

    start = ops.stack(list(inverted) + [zero, ops.cast(small, count.dtype)])
    _, state = ops.while_loop(more, body, (ops.convert_to_tensor(0, "int32"), start))
    draws = ops.where(small, state[0], state[3])
    draws = ops.where((p > 0.0) & (count > 0.0), draws, zero)
    return ops.where(flip, count - draws, draws)


# ------------------------------------------------------------- arithmetic


class _Plain:
    """Partial sums in one dtype (float64, or int32 for counts): values are plain tensors."""

    def __init__(self, dtype):
        self.dtype = dtype

    def weight(self, raw):
        return ops.abs(ops.cast(raw, self.dtype))

    def target(self, seed, mass):
        """`u * mass` per trial `[T]`, `u ~ Uniform[0, 1)` in this dtype."""
        return backend.uniform(ops.shape(mass), seed, self.dtype) * mass

    def suffix_pad(self, pads):
        return pads

    def sum16(self, grouped):
        return ops.cast(ops.sum(grouped, axis=-1), self.dtype)  # JAX with x64 sums int32 as int64

    def block_sums(self, cells):
        """Sums of 16 consecutive entries of `[rows, n]`, zero-padded to `_padded_blocks(n)` per row.

        XLA fuses the padding into the sums: one pass, and the level above
        needs no padded copy of them.
        """
        rows, size = cells.shape
        blocks = _padded_blocks(size)
        padded = ops.pad(cells, [[0, 0], [0, blocks * _FANOUT - size]])
        return self.sum16(ops.reshape(padded, [rows, blocks, _FANOUT]))

    def descend(self, children, remaining):
        """The child `[M]` of `children` `[M, 16]` holding each target, and the sum of the children before it.

        Runs on the transposed children as 16 elementwise steps: XLA on CPU
        runs a reduction fused with its producer as a scalar loop (about 25x
        slower here). A target at or past the end of the children (their sum
        here can round below the node's stored sum) goes to the last child
        with mass.
        """
        columns = ops.unstack(ops.transpose(children))  # one op, not two slices per child: fewer to trace
        end = passed = before_last = ops.zeros_like(remaining)
        chosen = last = ops.zeros(ops.shape(remaining), "int32")
        for k, column in enumerate(columns):
            before, end = end, end + column
            positive = column > 0
            last, before_last = ops.where(positive, k, last), ops.where(positive, before, before_last)
            at_most = end <= remaining
            chosen += ops.cast(at_most, "int32")
            passed = ops.where(at_most, end, passed)
        return _last_with_mass(chosen, passed, last, before_last)

    def sub(self, a, b):
        return a - b


    def where(self, condition, a, b):
        return ops.where(condition, a, b)



def _padded_blocks(size):
    """Blocks of 16 holding `size` cells, rounded up to a multiple of 16 when more than one."""
    blocks = -(-size // _FANOUT)
    return blocks if blocks == 1 else -(-blocks // _FANOUT) * _FANOUT


def _last_with_mass(chosen, passed, last, before_last, pairs=False):
    """`(chosen, passed)`, or `(last, before_last)` where the target is past the last child with mass."""
    past = chosen > last
    mask = past[..., None] if pairs else past
    return ops.where(past, last, chosen), ops.where(mask, before_last, passed)


def _two_sum(a, b):
    """`(s, e)` with `s = fl(a + b)` and `s + e = a + b` exactly (Knuth)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _pair(hi, lo):
    return ops.stack([hi, lo], axis=-1)


def _add_parts(a_hi, a_lo, b_hi, b_lo):
    """Double-float sum `(a_hi + a_lo) + (b_hi + b_lo)` as normalised `(hi, lo)`."""
    s, e = _two_sum(a_hi, b_hi)
    e = e + (a_lo + b_lo)
    hi = s + e
    return hi, e - (hi - s)


class _DoubleFloat32:
    """Double-float32 partial sums: a value is `[..., 2]` float32 (hi, lo), |lo| <= ulp(hi) / 2."""

    def __init__(self):
        self.dtype = "float32"

    def weight(self, raw):
        magnitude = ops.abs(ops.cast(raw, "float32"))
        return _pair(magnitude, ops.zeros_like(magnitude))

    def suffix_pad(self, pads):
        return pads + [[0, 0]]

    def add(self, a, b):
        return _pair(*_add_parts(a[..., 0], a[..., 1], b[..., 0], b[..., 1]))

    def sub(self, a, b):
        return self.add(a, -b)


    def where(self, condition, a, b):
        return ops.where(condition[..., None], a, b)

    def sum16(self, grouped):
        """Pairwise sums over the axis of 16 (`[..., 16, 2]` -> `[..., 2]`)."""
        while grouped.shape[-2] > 1:
            half = ops.reshape(grouped, tuple(grouped.shape[:-2]) + (grouped.shape[-2] // 2, 2, 2))
            grouped = self.add(half[..., 0, :], half[..., 1, :])
        return grouped[..., 0, :]

    def block_sums(self, cells):
        rows, size = cells.shape[:2]
        blocks = _padded_blocks(size)
        padded = ops.pad(cells, [[0, 0], [0, blocks * _FANOUT - size], [0, 0]])
        return self.sum16(ops.reshape(padded, [rows, blocks, _FANOUT, 2]))

    def descend(self, children, remaining):
        """As `_Plain.descend`, on the hi and lo parts, the 16 children in a loop.

        Unrolled, XLA on CPU fuses and recomputes the chain of double-float
        sums (2.5x slower at d = 1e6, docs/backends.md).
        """
        rest_hi, rest_lo = remaining[..., 0], remaining[..., 1]

        def child(k, state):
            end_hi, end_lo, passed_hi, passed_lo, chosen, last, before_hi, before_lo = state
            column = ops.take(children, k, axis=1)
            positive = column[:, 0] > 0
            last = ops.where(positive, k, last)
            before_hi, before_lo = ops.where(positive, end_hi, before_hi), ops.where(positive, end_lo, before_lo)
            end_hi, end_lo = _add_parts(end_hi, end_lo, column[:, 0], column[:, 1])
            at_most = (end_hi < rest_hi) | ((end_hi == rest_hi) & (end_lo <= rest_lo))
            passed_hi, passed_lo = ops.where(at_most, end_hi, passed_hi), ops.where(at_most, end_lo, passed_lo)
            return end_hi, end_lo, passed_hi, passed_lo, chosen + ops.cast(at_most, "int32"), last, before_hi, before_lo

        zero, none = ops.zeros_like(rest_hi), ops.zeros(ops.shape(rest_hi), "int32")
        state = ops.fori_loop(0, _FANOUT, child, (zero, zero, zero, zero, none, none, zero, zero))
        _, _, passed_hi, passed_lo, chosen, last, before_hi, before_lo = state
        return _last_with_mass(chosen, _pair(passed_hi, passed_lo), last, _pair(before_hi, before_lo), pairs=True)


    def target(self, seed, mass):
        """`u * mass` per trial `[T, 2]`, `u` from two 24-bit words per trial."""
        return self.scaled(backend.bits24([2, mass.shape[0]], seed), mass)

    def scaled(self, words, total):
        """`u * total` for `u = (k1 + k2 / 2**24) / 2**24` from two 24-bit words, to about 2**-48 of `total`.

        The leading product is exact: `k1` and `total`'s hi part are each
        split into 12-bit halves (bit masks, no rounding), whose products fit
        in float32.
        """
        k1, k2 = words[0], words[1]
        u1 = ops.cast(k1 // 4096, "float32") * 2.0**-12
        u2 = ops.cast(k1 % 4096, "float32") * 2.0**-24
        hi, lo = total[..., 0], total[..., 1]
        h1 = backend.high_half(hi)
        h2 = hi - h1
        result = _pair(u1 * h1, ops.zeros_like(hi))
        for term in (u1 * h2, u2 * h1, u2 * h2, (u1 + u2) * lo, ops.cast(k2, "float32") * 2.0**-48 * hi):
            result = self.add(result, _pair(term, ops.zeros_like(term)))
        return result


_INT32 = _Plain("int32")


def _two_prod(a, b):
    """`(p, e)` with `p = fl(a b)` and `p + e = a b` exactly (Dekker; halves split by bit masks)."""
    p = a * b
    a1, b1 = backend.high_half(a), backend.high_half(b)
    a2, b2 = a - a1, b - b1
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def _mul_parts(a_hi, a_lo, b_hi, b_lo):
    """Double-float product, normalised `(hi, lo)`, relative error about 2**-46."""
    p, e = _two_prod(a_hi, b_hi)
    e = e + (a_hi * b_lo + a_lo * b_hi)
    hi = p + e
    return hi, e - (hi - p)


def _div_parts(a_hi, a_lo, b_hi, b_lo):
    """Double-float quotient, normalised `(hi, lo)`, relative error about 2**-44."""
    q1 = a_hi / b_hi
    p_hi, p_lo = _mul_parts(q1, ops.zeros_like(q1), b_hi, b_lo)
    r_hi, _ = _add_parts(a_hi, a_lo, -p_hi, -p_lo)
    q2 = r_hi / b_hi
    hi = q1 + q2
    return hi, q2 - (hi - q1)


def _threshold(p_hi, p_lo):
    """Int32 `(a, b)` with `(a 2**24 + b) / 2**48 = p` to 2**-48, `p = p_hi + p_lo` in [0, 1].

    A trial with 24-bit words `(k1, k2)` passes where `(k1, k2) < (a, b)`:
    probability `p` to within 2**-48.
    """
    scaled = p_hi * 2.0**24
    a = ops.floor(scaled)
    b = ops.floor(((scaled - a) + p_lo * 2.0**24) * 2.0**24)
    carry = ops.floor(b * 2.0**-24)
    return ops.cast(a + carry, "int32"), ops.cast(b - carry * 2.0**24, "int32")


def _below(words, threshold):
    k1, k2 = words
    a, b = threshold
    return (k1 < a) | ((k1 == a) & (k2 < b))


def _uniform_cells(words, size):
    """`floor(u size)` for `u = (k1 2**24 + k2) / 2**48` from two 24-bit words; `size` int32 < 2**31.

    In double-float: each cell's interval of `u` is placed to about 2**-46.
    """
    k1, k2 = words
    size_hi = ops.cast(size, "float32")
    size_lo = ops.cast(size - ops.cast(size_hi, "int32"), "float32")
    t_hi, t_lo = _mul_parts(ops.cast(k1, "float32") * 2.0**-24, ops.cast(k2, "float32") * 2.0**-48, size_hi, size_lo)
    whole = ops.floor(t_hi)
    cell = ops.cast(whole, "int32") + ops.cast(ops.floor((t_hi - whole) + t_lo), "int32")
    return ops.clip(cell, 0, size - 1)


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
    """16-ary sum trees, one per segment, walked together.

    The leaves are `arith.weight` of the cells themselves, read in place; the
    first level holds the sums of 16 consecutive leaves, each level above the
    sums of 16 entries of the one below (zero-padded), up to one root per
    segment. With `rows` (one tensor per segment), the first level is summed
    from them rather than from slices of `values`: XLA rewrites a slice of a
    concatenation as a concatenation of its own, which would copy the cells
    a second time. Shallower segments get single-child levels on top, so that every
    segment has `depth` levels and one while loop walks them all; the levels
    sit top first in one `[nodes, 16]` table, indexed by per-segment offsets.
    """

    def __init__(self, values, layout, arith, rows=None):
        self.arith, self.values = arith, values
        per_group = []  # per group: (blocks per segment, upper levels top first, totals)
        first = 0
        for start, count, size in layout.groups:
            if rows is None or size < _ROW_CELLS:
                sums = arith.block_sums(arith.weight(ops.reshape(values[start : start + count * size], [count, size])))
            else:
                group = [arith.block_sums(arith.weight(ops.reshape(row, [1, size]))) for row in rows[first : first + count]]
                sums = ops.concatenate(group, axis=0) if count > 1 else group[0]
            first += count
            blocks, upper = -(-size // _FANOUT), []
            while sums.shape[1] > 1:
                upper.insert(0, self._grouped(sums))
                sums = arith.sum16(upper[0])
            per_group.append((blocks, upper, sums[:, 0]))
        self.total = ops.concatenate([total for _, _, total in per_group], axis=0)
        self.depth = max(len(upper) for _, upper, _ in per_group)
        pieces, starts = [], np.zeros([self.depth, layout.count], np.int32)
        widths = np.zeros([self.depth + 2, layout.count], np.int32)  # nodes per level, then cells
        offset = 0
        for level in range(self.depth):
            first = 0
            for (blocks, upper, total), (_, count, _) in zip(per_group, layout.groups):
                missing = self.depth - len(upper)
                if level < missing:  # a single child holding the whole total
                    nodes = ops.pad(total[:, None, None], arith.suffix_pad([[0, 0], [0, 0], [0, _FANOUT - 1]]))
                else:
                    nodes = upper[level - missing]
                starts[level, first : first + count] = offset + np.arange(count) * nodes.shape[1]
                widths[level, first : first + count] = nodes.shape[1]
                pieces.append(ops.reshape(nodes, (-1,) + tuple(nodes.shape[2:])))
                offset += count * nodes.shape[1]
                first += count
        first = 0
        for (blocks, _, _), (_, count, _) in zip(per_group, layout.groups):
            widths[self.depth, first : first + count] = blocks
            first += count
        widths[self.depth + 1] = layout.sizes
        self.table = ops.concatenate(pieces, axis=0) if pieces else None
        self.starts, self.widths = ops.convert_to_tensor(starts), ops.convert_to_tensor(widths)
        self.cell_starts = ops.convert_to_tensor(layout.starts)
        self.sizes = ops.convert_to_tensor(layout.sizes.astype(np.int32))

    def _grouped(self, values):
        """`[rows, n]` padded with zeros and viewed as `[rows, ceil(n/16), 16]`."""
        rows, width = values.shape[:2]
        groups = -(-width // _FANOUT)
        padded = ops.pad(values, self.arith.suffix_pad([[0, 0], [0, groups * _FANOUT - width]]))
        return ops.reshape(padded, (rows, groups, _FANOUT) + tuple(values.shape[2:]))

    def locate(self, segment, target):
        """The cell `[T]` of each target: the first whose inclusive prefix sum exceeds it.

        `segment` is int32 `[T]`, `target` in `[0, total)` of its segment;
        the cell is in `[0, size)` of the segment whatever the target.
        Walks from the roots to the leaves, subtracting the sums of the
        children passed over. The levels are walked in a while loop on
        purpose: straight-line code lets XLA fuse each level's 16 steps into
        the next level's gather and redo them for every one of the 16
        children (4-7x slower at d = 1e7). The leaves are its last step, so
        that the 16 steps compile once.
        """
        arith, gather = self.arith, backend.gather

        def leaves(node):
            # Read in place: 16 cells from the segment's start, zero past its end.
            cell = node[:, None] * _FANOUT + ops.arange(_FANOUT, dtype="int32")[None, :]
            inside = cell < gather(self.sizes, segment)[:, None]
            flat = gather(self.cell_starts, segment)[:, None] + ops.where(inside, cell, 0)
            weights = arith.weight(gather(self.values, flat))
            return arith.where(inside, weights, ops.zeros_like(weights))

        def level(depth, node, remaining):
            if self.depth:
                inner = lambda: gather(self.table, gather(self.starts[depth], segment) + node)  # noqa: E731
                children = ops.cond(depth < self.depth, inner, lambda: leaves(node))
            else:
                children = leaves(node)
            chosen, passed = arith.descend(children, remaining)
            below = gather(self.widths[depth + 1], segment) - 1
            return depth + 1, ops.minimum(node * _FANOUT + chosen, below), arith.sub(remaining, passed)

        start = (ops.convert_to_tensor(0, "int32"), ops.zeros_like(segment), target)
        return ops.while_loop(lambda depth, node, remaining: depth <= self.depth, level, start)[1]


# ------------------------------------------------------------------- drawing


def _owner(layout, counts):
    """The segment of each trial rank `[T]`, trials numbered segment after segment (`counts[s]` each)."""
    if layout.count == 1:
        return ops.zeros_like
    owners = _SegmentTree(counts, Segments([(0, 1, layout.count)]), _INT32)
    return lambda rank: owners.locate(ops.zeros_like(rank), rank)


def _place_uniform(counts, layout, uniform, slots, seed):
    """Adds `uniform[s]` uniform trials to each segment `s`, `slots[g]` per segment of group `g` a round."""
    bounds = [0] + list(np.cumsum([count for _, count, _ in layout.groups]))
    slot_per_segment = ops.convert_to_tensor(
        np.concatenate([np.full(count, k, np.float64) for (_, count, _), k in zip(layout.groups, slots)])
    )

    def more(step, counts):
        return ops.any(ops.cast(step, "float64") * slot_per_segment < uniform)

    key = _stream(seed, 3)
    sizes = [count * k for (_, count, _), k in zip(layout.groups, slots)]
    splits = [int(end) for end in np.cumsum(sizes)[:-1]]

    def body(step, counts):
        draws = ops.split(_uniform([sum(sizes)], key, step), splits) if splits else [_uniform([sizes[0]], key, step)]
        indices, lives = [], []
        for g, ((start, count, size), k) in enumerate(zip(layout.groups, slots)):
            local = ops.minimum(ops.cast(ops.floor(ops.reshape(draws[g], [count, k]) * size), "int32"), size - 1)
            rank = ops.cast(step * k + ops.arange(k, dtype="int32"), "float64")
            live = rank[None, :] < uniform[bounds[g] : bounds[g + 1], None]
            cell = start + ops.arange(count, dtype="int32")[:, None] * size + local
            indices.append(ops.reshape(cell, [-1]))
            lives.append(ops.reshape(live, [-1]))
        index = ops.concatenate(indices, axis=0) if len(indices) > 1 else indices[0]
        live = ops.concatenate(lives, axis=0) if len(lives) > 1 else lives[0]
        return step + 1, backend.scatter_add(counts, index, live)

    return ops.while_loop(more, body, (ops.convert_to_tensor(0, "int32"), counts))[1]


def _place_searched(counts, layout, tree, searched, seed, chunk):
    """Adds `searched[s]` (int32) trials to each segment `s`, landing on cell `i` with probability ~ leaf `i`."""
    total = ops.sum(searched)
    owner = _owner(layout, searched)
    key = _stream(seed, 2)

    def more(step, counts):
        return step * chunk < total

    def body(step, counts):
        rank = step * chunk + ops.arange(chunk, dtype="int32")
        segment = owner(rank)
        target = tree.arith.target(backend.fold_in(key, step), backend.gather(tree.total, segment))
        index = backend.gather(tree.cell_starts, segment) + tree.locate(segment, target)
        return step + 1, backend.scatter_add(counts, index, rank < total)

    return ops.while_loop(more, body, (ops.convert_to_tensor(0, "int32"), counts))[1]


def _segment_values(values, layout, dtype):
    """A tensor `[segments]` from a scalar, a per-segment array or a tensor."""
    return ops.broadcast_to(ops.cast(values, dtype), [layout.count])


def _passing_and_uniform(trials, rate, share, seed):
    """`N ~ Binomial(n, r)`, then `U ~ Binomial(N, s)`: one `binomial` in a loop of two, compiled once."""

    def stage(k, drawn):
        first = k == 0
        count = ops.where(first, trials, drawn[0])
        value = binomial(count, ops.where(first, rate, share), backend.fold_in(seed, -1 - k))
        return ops.where(first, value, drawn[0]), ops.where(first, drawn[1], value)

    return ops.fori_loop(0, 2, stage, (ops.zeros_like(trials), ops.zeros_like(trials)))


def _draw_float64(magnitudes, rows, layout, trials, rate, smoothing, seed, slots, search_chunk, relative, dense, mean):
    tree = _SegmentTree(magnitudes, layout, _Plain("float64"), rows)
    mass = tree.total
    spread = smoothing * (mass if relative else ops.convert_to_tensor(layout.sizes.astype(np.float64)))
    # A NaN or Inf makes the mass non-finite; a zero total has no direction.
    usable = ops.isfinite(mass) & (mass + spread > 0.0)
    share = ops.where(usable, spread / (mass + spread), 0.0)
    passing, uniform = _passing_and_uniform(trials, ops.where(usable, rate, 0.0), share, seed)
    if any(dense):
        counts, left = uniform_share.place(magnitudes.shape[0], layout, dense, uniform, seed, mean)
    else:
        counts, left = ops.zeros([magnitudes.shape[0]], "int32"), uniform
    counts = _place_uniform(counts, layout, left, slots, seed)
    return _place_searched(counts, layout, tree, ops.cast(passing - uniform, "int32"), seed, search_chunk)


def _place_mixed(counts, layout, passing, threshold, seed, chunk):
    """Each of `passing[s]` trials is uniform with probability `threshold[s]` (48 bits) and placed at once.

    Returns the counts and, per segment, the trials left to search.
    """
    total = ops.sum(passing)
    owner = _owner(layout, passing)
    starts = ops.convert_to_tensor(layout.starts)
    sizes = ops.convert_to_tensor(layout.sizes.astype(np.int32))
    key = _stream(seed, 3)

    def more(step, counts, searched):
        return step * chunk < total

    def body(step, counts, searched):
        rank = step * chunk + ops.arange(chunk, dtype="int32")
        segment = owner(rank)
        words = backend.bits24([4, chunk], backend.fold_in(key, step))
        live = rank < total
        bounds = (backend.gather(threshold[0], segment), backend.gather(threshold[1], segment))
        uniform = live & _below((words[0], words[1]), bounds)
        cell = backend.gather(starts, segment) + _uniform_cells((words[2], words[3]), backend.gather(sizes, segment))
        counts = backend.scatter_add(counts, cell, uniform)
        left = ops.segment_sum(ops.cast(live & ~uniform, "int32"), segment, num_segments=layout.count)
        return step + 1, counts, searched + left

    start = (ops.convert_to_tensor(0, "int32"), counts, ops.zeros([layout.count], "int32"))
    _, counts, searched = ops.while_loop(more, body, start)
    return counts, searched


def _draw_float32x2(magnitudes, rows, layout, trials, rate, smoothing, seed, slots, search_chunk, relative):
    tree = _SegmentTree(ops.cast(magnitudes, "float32"), layout, _DoubleFloat32(), rows)
    mass_hi, mass_lo = tree.total[:, 0], tree.total[:, 1]
    if relative:  # c in units of the segment's mean |m|: a spread of c ||m||_1
        spread = _mul_parts(mass_hi, mass_lo, smoothing, ops.zeros_like(mass_hi))
    else:  # c d, with d split exactly into two float32
        size_hi = layout.sizes.astype(np.float32)
        size_lo = (layout.sizes - size_hi.astype(np.int64)).astype(np.float32)
        spread = _mul_parts(smoothing + ops.zeros_like(mass_hi), ops.zeros_like(mass_hi),
                            ops.convert_to_tensor(size_hi), ops.convert_to_tensor(size_lo))
    whole = _add_parts(mass_hi, mass_lo, *spread)
    # A NaN or Inf makes the mass non-finite; a zero total has no direction.
    usable = ops.isfinite(mass_hi) & (whole[0] > 0.0)
    share = _div_parts(*spread, *whole)
    threshold = tuple(ops.where(usable, part, 0) for part in _threshold(*share))
    # N ~ Binomial(n, r) as a sum of binomials of at most _PIECE trials: counts exact in float32.
    pieces, owner = [], []
    for segment, n in enumerate(trials):
        whole_pieces, rest = divmod(int(n), _PIECE)
        pieces += [_PIECE] * whole_pieces + ([rest] if rest else [])
        owner += [segment] * (whole_pieces + (1 if rest else 0))
    if not pieces:
        pieces, owner = [0], [0]
    owner = ops.convert_to_tensor(np.asarray(owner, np.int32))
    rate = ops.where(usable, rate, 0.0)
    drawn = binomial(ops.convert_to_tensor(np.asarray(pieces, np.float32)), backend.gather(rate, owner),
                     backend.fold_in(seed, -1))
    passing = ops.segment_sum(ops.cast(drawn, "int32"), owner, num_segments=layout.count)
    counts = ops.zeros([magnitudes.shape[0]], "int32")
    per_round = sum(count * k for (_, count, _), k in zip(layout.groups, slots))  # as _place_uniform's rounds
    counts, searched = _place_mixed(counts, layout, passing, threshold, seed, min(per_round, MAX_CHUNK))
    return _place_searched(counts, layout, tree, searched, seed, max(search_chunk, min(per_round, SEARCH_CHUNK)))


def _dense_groups(layout, trials, smoothing, rate_hint):
    """Per group of `layout`, whether its uniform trials take `uniform_share`'s dense pass, and the pass's mean."""
    if not (isinstance(trials, (list, tuple)) and isinstance(smoothing, (int, float)) and smoothing > 0):
        return [False] * len(layout.groups), None
    bounds = np.cumsum([0] + [count for _, count, _ in layout.groups])
    return uniform_share.plan(
        [(trials[bounds[g] : bounds[g + 1]], count, size) for g, (_, count, size) in enumerate(layout.groups)], rate_hint
    )


def draw_counts(magnitudes, layout, trials, rate, smoothing, seed, slots, search_chunk, relative=False,
                precision="float64", rate_hint=None):
    """Counts of `ZIMultinomial(n, r, q)`, `q ~ |m| + c`, for every segment of `layout`.

    Args:
        magnitudes: float `[L]`, or a list of one float tensor per segment
            of `layout`, in its order (their concatenation is `[L]`): the
            tree's block sums then read each where it is. Their absolute
            values are used.
        layout: the `Segments` of `magnitudes` to draw in.
        trials: trials `n` per segment: Python ints (a list or tuple), or,
            with `"float64"`, a float64 tensor `[segments]`.
        rate: float `[segments]` (or a scalar), `r` in [0, 1].
        smoothing: float scalar `c >= 0`.
        seed: stateless seed, int32 `[2]`.
        slots: Python ints, uniform trials placed per segment and loop step,
            one per group of `layout` (with `"float32x2"`, their sum over
            segments is the number of passing trials sorted per loop step).
        search_chunk: Python int, searched trials placed per loop step.
        relative: Python bool; if True, `c` is in units of the segment's
            mean `|m|` (a uniform share of `c / (1 + c)` at any scale).
        precision: `"float64"` or `"float32x2"` (see the module docstring).
        rate_hint: Python float or None: the rate the loops are sized for.
            With `"float64"`, static `trials` and a Python `smoothing > 0`,
            groups expected to draw `MIN_RATE` or more uniform trials per cell
            place them by `keras_zim.uniform_share`'s dense pass; `slots`
            then sizes only what it leaves. None: no dense pass.

    Returns:
        int32 `[L]` counts. Segments whose magnitudes sum to zero, or hold a
        NaN or Inf, get none.
    """
    rows = None
    if isinstance(magnitudes, (list, tuple)):
        if len(magnitudes) != layout.count:
            raise ValueError(f"Got {len(magnitudes)} magnitude tensors for {layout.count} segments.")
        rows = list(magnitudes)
        magnitudes = ops.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
    if precision == "float64":
        dense, mean = _dense_groups(layout, trials, smoothing, rate_hint)
        if any(dense):
            bounds = np.cumsum([0] + [count for _, count, _ in layout.groups])
            slots = [uniform_share.left_over(max(trials[bounds[g] : bounds[g + 1]]), rate_hint, size, mean) if on else k
                     for g, ((_, _, size), k, on) in enumerate(zip(layout.groups, slots, dense))]
        if isinstance(trials, (list, tuple)):
            trials = ops.convert_to_tensor(np.asarray(trials, np.float64))
        counts = _draw_float64(
            magnitudes, rows, layout, trials, _segment_values(rate, layout, "float64"),
            ops.cast(smoothing, "float64"), seed, slots, search_chunk, relative, dense, mean,
        )
    elif precision == "float32x2":
        if not isinstance(trials, (list, tuple)):
            raise ValueError("precision='float32x2' needs the trials as Python ints (static).")
        counts = _draw_float32x2(
            magnitudes, rows, layout, trials, _segment_values(rate, layout, "float32"),
            ops.cast(smoothing, "float32"), seed, slots, search_chunk, relative,
        )
    else:
        raise ValueError(f"Argument `precision` must be 'float64' or 'float32x2'. Received: precision={precision!r}")
    return counts


def _counts(weights, smoothing, total_count, rate, seed, chunk, precision):
    """`[rows, d]` int32 counts, one segment per row."""
    rows, size = weights.shape
    layout = Segments([(0, rows, size)])
    counts = draw_counts(
        ops.reshape(weights, [-1]), layout, total_count, rate, smoothing, seed, [chunk],
        min(chunk, SEARCH_CHUNK), precision=precision,
    )
    return ops.reshape(counts, [rows, size])


# The hot path compiles with XLA; one-off draws (initialisers) skip the
# seconds that tracing and compiling a new shape cost and run op by op.
_sample_counts = backend.jit(_counts, static_argnames=("total_count", "chunk", "precision"))


def _static_ints(value):
    """`value` as a tuple of Python ints if it is known without running anything, else None."""
    if isinstance(value, (int, float, np.integer, np.floating, list, tuple, np.ndarray)):
        return tuple(int(v) for v in np.ravel(np.asarray(value)))
    try:
        return tuple(int(v) for v in np.ravel(keras.ops.convert_to_numpy(value)))
    except Exception:  # a symbolic tensor inside a traced function
        return None


def sample_counts(weights, total_count, rate, seed, chunk=None, smoothing=0.0, jit_compile=True, precision="auto"):
    """Draws `x ~ ZIMultinomial(n, r, q)` per row, exactly, `q ~ |w| + c`.

    Compiled with XLA where the backend compiles; static shapes, memory
    O(rows * (d + chunk)).

    Args:
        weights: float tensor `[rows, d]` of non-negative weights (need not
            sum to one), or of magnitudes whose absolute values are used.
        total_count: trials `n` per row, shape `[rows]` or scalar.
        rate: zero-inflation rate `r` in [0, 1] per row, `[rows]` or scalar.
        seed: stateless seed, int tensor of shape `[2]`.
        chunk: Python int, trials of a row placed per loop iteration.
            Defaults to `chunk_size(max n, 1)` when `n` is static, else 1024.
        smoothing: `c >= 0` added to every `|w_i|`. Defaults to `0.0`.
        jit_compile: compile (fast draws, a few seconds to compile each new
            shape) or run op by op (no compile; for one-off draws). Defaults
            to `True`.
        precision: one of `PRECISIONS`. Defaults to `"auto"`.

    Returns:
        int32 tensor `[rows, d]` of counts. Rows whose weights sum to zero, or
        hold a NaN or Inf, get zero counts.
    """
    precision = resolve_precision(precision)
    weights = ops.convert_to_tensor(weights)
    if not keras.backend.is_float_dtype(weights.dtype):
        weights = ops.cast(weights, "float64" if precision == "float64" else "float32")
    rows = weights.shape[0]
    static = _static_ints(total_count)
    if chunk is None:
        chunk = 1024 if static is None else chunk_size(max(static), 1.0)
    if precision == "float64":  # a tensor: no retrace per value
        total_count = ops.broadcast_to(ops.cast(total_count, "float64"), [rows])
    elif static is None:
        raise ValueError("sample_counts with precision='float32x2' needs a static `total_count` (Python ints).")
    else:
        total_count = static * rows if len(static) == 1 else static
    rate = ops.broadcast_to(ops.cast(rate, "float64" if precision == "float64" else "float32"), [rows])
    seed = ops.cast(ops.convert_to_tensor(seed), "int32")
    smoothing = ops.convert_to_tensor(float(smoothing), "float64" if precision == "float64" else "float32")
    sampler = _sample_counts if jit_compile else _counts
    return sampler(weights, smoothing, total_count, rate, seed, chunk=int(chunk), precision=precision)


def _flattened(gradients, precision):
    """Each gradient as a vector, float64 if any is and `precision` allows, else float32."""
    wide = precision == "float64" and any(keras.backend.standardize_dtype(g.dtype) == "float64" for g in gradients)
    return [ops.reshape(ops.cast(g, "float64" if wide else "float32"), [-1]) for g in gradients]


def flat_gradients(gradients, precision="float64"):
    """The gradients as one vector (float64 if any is and `precision` allows, else float32) and their sizes."""
    flat = _flattened(gradients, precision)
    return (ops.concatenate(flat, axis=0) if len(flat) > 1 else flat[0]), [int(f.shape[0]) for f in flat]


def _split_counts(counts, sizes):
    """`counts` (int32, `>= 0`) split into pieces of `sizes`, each sliced at a start known only at run time.

    XLA compiles one kernel per distinct fused computation. A static start
    is a constant inside the kernel that reads the piece (ZIM's update of a
    variable), so every variable got a kernel of its own. Starts carried
    through a while loop whose trip count XLA cannot know (`1 + min(counts[0], 0)`,
    always 1) are buffers instead, and the updates of equal-sized variables
    share one kernel.
    """
    if len(sizes) == 1:
        return [counts]
    starts = tuple(ops.split(ops.convert_to_tensor(np.cumsum([0] + list(sizes[:-1])), "int32"), len(sizes)))
    trips = 1 + ops.minimum(counts[0], 0)

    def body(step, *starts):
        zero = ops.minimum(step, 0)
        return (step + 1,) + tuple(start + zero for start in starts)

    _, *starts = ops.while_loop(lambda step, *_: step < trips, body, (ops.convert_to_tensor(0, "int32"),) + starts)
    return [ops.slice(counts, start, [size]) for start, size in zip(starts, sizes)]


def scope_counts(gradients, scope, rate, seed, trials, smoothing, slots, relative=False, precision="float64",
                 rate_hint=None):
    """ZIM trial counts for `gradients` as one scope (`"global"`) or one per gradient (`"variable"`).

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over each scope; `trials` and
    `slots` (uniform trials placed per loop step) hold Python ints, one per
    scope. In the variable scope the gradients are laid out by size, so that
    equal sizes form one group of segments and the draw compiles once per
    size, not once per variable. `rate_hint` as for `draw_counts`.

    Returns:
        One flat int32 count tensor per gradient.
    """
    if scope == "global":
        order = [0]
        magnitudes, sizes = flat_gradients(gradients, precision)
        layout = Segments([(0, 1, magnitudes.shape[0])])
    else:
        order = sorted(range(len(gradients)), key=lambda i: int(np.prod(gradients[i].shape)))
        magnitudes = _flattened([gradients[i] for i in order], precision)  # one per segment
        sizes = [int(m.shape[0]) for m in magnitudes]
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
    rate = ops.clip(ops.cast(rate, "float64" if precision == "float64" else "float32"), 0.0, 1.0)
    counts = draw_counts(
        magnitudes, layout, list(trials), rate, float(smoothing), seed, slots,
        min(max(slots), SEARCH_CHUNK), relative, precision, rate_hint,
    )
    pieces = _split_counts(counts, sizes)
    if scope == "global":
        return pieces
    result = [None] * len(gradients)
    for position, i in enumerate(order):
        result[i] = pieces[position]
    return result


def _grid_moves(gradients, rate, seed, trials, smoothing, unit, chunk, precision, rate_hint):
    trials = sum(int(np.prod(g.shape)) for g in gradients) if trials is None else trials
    counts = scope_counts(gradients, "global", rate, seed, [trials], smoothing, [chunk], precision=precision,
                          rate_hint=rate_hint)
    # Where no trial landed the move is 0, even where g is NaN (sign(NaN) * 0 is NaN).
    moves = [ops.where(c > 0, ops.cast(c, f.dtype) * ops.sign(f) * unit, 0.0)
             for c, f in zip(counts, _flattened(gradients, precision))]
    return [ops.reshape(ops.cast(m, g.dtype), g.shape) for m, g in zip(moves, gradients)]


_compiled_grid_moves = backend.jit(
    _grid_moves, static_argnames=("trials", "smoothing", "unit", "chunk", "precision", "rate_hint")
)


def grid_moves(gradients, rate, seed, trials, smoothing, unit, chunk, precision="auto", rate_hint=None):
    """The ZIM move `unit * x * sign(g)` for gradients sampled as one scope.

    `q_i = (|g_i| + c) / (||g||_1 + c d)` over all of `gradients` together,
    `x ~ ZIMultinomial(trials, rate, q)`. If any gradient has a NaN or Inf,
    every move is zero (the step is skipped). The optimizer applies the same
    draw (`keras_zim.ZIM`); this form returns it. Compiled with XLA where the
    backend compiles.

    Args:
        gradients: list of dense float tensors (any shapes).
        rate: float scalar tensor, clipped into [0, 1].
        seed: stateless seed, int tensor of shape `[2]`.
        trials: Python int `n`, or None for `d` (all gradient entries).
        smoothing: Python float `c >= 0`.
        unit: Python float, the grid step.
        chunk: Python int, trials placed per loop iteration.
        precision: one of `PRECISIONS`. Defaults to `"auto"`.
        rate_hint: Python float or None, as for `draw_counts`; the optimizer
            passes the rate it was built at. Defaults to None.

    Returns:
        List of moves, each shaped and typed like its gradient.
    """
    seed = ops.cast(ops.convert_to_tensor(seed), "int32")
    return _compiled_grid_moves(
        list(gradients), rate, seed, trials=trials, smoothing=float(smoothing), unit=float(unit), chunk=int(chunk),
        precision=resolve_precision(precision), rate_hint=None if rate_hint is None else float(rate_hint),
    )

"""The uniform share of ZIM's trials placed by one dense pass, not one scatter-add per trial.

`U` trials, each uniform over a segment's `d` cells, give counts
`Multinomial(U, 1/d)`. Drawn cell by cell (Poissonisation):

- Every cell gets `Poisson(mu)` independently; given their total `M`,
  these counts are exactly `Multinomial(M, 1/d)`, whatever `mu`. One `mu`
  serves every segment of the pass (one pass, one compile, for all groups
  of the variable scope): the least `lambda / d` over the segments,
  `lambda = U - 4 sqrt(U) - 16`, and at most `BLOCK_RATE / 8`. `plan`
  leaves out groups that would lower it too much for the others.
- If `M <= U` (almost always), the caller places the other `U - M` trials one
  by one: `Multinomial(M) + Multinomial(U - M)` is `Multinomial(U)` given
  `M`. If `M > U`, the segment's pass is dropped and all `U` go one by one;
  that choice depends on `M` alone, so the law given `M` stands.

Cells go in blocks of 8. A block's total is `Poisson(8 mu)`, by inversion
of a 64-bit uniform (two hashed words) against 64-bit tail thresholds; its
trials land on its cells by the 3-bit fields of one or two more words, their
counts sit in the 4-bit fields of one int32. Blocks past their fast slots
(`fast_slots`: as few as leave such a block in about one draw in 100) get
the rest one block batch at a time, up to `ALL_SLOTS`, beyond which a 64-bit
uniform cannot reach. Lanes past a segment's end draw too, and their trials
are dropped: every cell keeps its own `Poisson(mu)`. The bits are
`backend.hash32` of (lane, word), keyed on the step's seed.

Float64 only (the thresholds are float64 tail sums). docs/sampler.md has
the measurements.
"""

import functools
import math

import numpy as np
from keras import ops

from keras_zim import backend

BLOCK = 8
FAST_SLOTS = 15  # the most trials a block places in its fast path (4-bit counts)
RARE_PASSES = 0.01  # blocks past their fast slots expected per draw, at most
ALL_SLOTS = 40
BLOCK_RATE = 2.0  # P(Poisson(2) > ALL_SLOTS) < 2**-64
MIN_RATE = 1.0 / 16.0  # expected uniform trials per cell from which the pass beats the scatter-adds
MIN_CELLS = 1 << 16
MAX_LANES = 1 << 28  # hash counters are 8 per lane, below 2**31
ROW_BLOCKS = 64
BATCH = 256  # blocks past their fast slots completed per loop step
SPARE = (4.0, 16.0)  # lambda = U - 4 sqrt(U) - 16
_TERMS = 64  # Poisson pmf terms summed for the tails: below 1e-60 past them at mean 2
_LOG_FACTORIALS = np.asarray([math.lgamma(j + 1.0) for j in range(_TERMS)])


def pays(trials, rate_hint, size, count):
    """Whether a group of `count` segments of `size` cells, `trials` each, takes the dense pass at `rate_hint`."""
    return (
        rate_hint is not None
        and min(trials) * rate_hint >= MIN_RATE * size
        and count * size >= MIN_CELLS
        and size >= BLOCK
    )


def lanes(count, size):
    """Lanes (cells and padding) the pass draws for `count` segments of `size` cells."""
    return count * -(-size // (BLOCK * ROW_BLOCKS)) * ROW_BLOCKS * BLOCK


def _spare(expected):
    return SPARE[0] * math.sqrt(expected) + SPARE[1]


def plan(groups, rate_hint):
    """Which groups take the pass, and the mean per cell it is expected to use, at `rate_hint`.

    `groups` holds `(trials, count, size)` per group of a layout (`trials`:
    Python ints, one per segment). The pass runs at the least `lambda / d`
    of its segments; a group that would lower that mean for the others more
    than the pass saves on its own trials is left to the one-by-one
    placement. Costs are counted in trials placed one by one, a cell of the
    pass costing `MIN_RATE` of one.

    Returns:
        `(dense, mean)`: Python bools per group, and the expected mean (None
        where no group takes the pass).
    """
    candidates = [pays(trials, rate_hint, size, count) for trials, count, size in groups]
    means = [min(BLOCK_RATE / BLOCK, max(min(t) * rate_hint - _spare(min(t) * rate_hint), 0.0) / size)
             if on else None for (t, _, size), on in zip(groups, candidates)]

    def cost(mean):
        return sum(
            count * (MIN_RATE * size + sum(t) * rate_hint / len(t) - mean * size) if m is not None and m >= mean
            else sum(t) * rate_hint
            for (t, count, size), m in zip(groups, means)
        )

    options = sorted({m for m in means if m is not None})
    if not options:
        return [False] * len(groups), None
    mean = min(options, key=cost)
    dense = [m is not None and m >= mean for m in means]
    if sum(lanes(count, size) for (_, count, size), on in zip(groups, dense) if on) >= MAX_LANES:
        return [False] * len(groups), None
    return dense, mean


def left_over(trials, rate_hint, size, mean):
    """Static loop slots for the trials the pass at `mean` per cell leaves (`U - M`) in one segment."""
    expected = trials * rate_hint
    spare = _spare(expected)
    left = max(spare, expected - BLOCK_RATE / BLOCK * size + spare, expected - mean * size, 0.0)
    return max(1, math.ceil(left + 8.0 * math.sqrt(left) + 16.0))


def fast_slots(mean, blocks):
    """Fast slots for `blocks` blocks at `mean` per cell: the fewest (at most `FAST_SLOTS`) that leave a
    block past them in at most `RARE_PASSES` of the draws.

    Fewer slots are fewer threshold comparisons and hashed words per block;
    the blocks past them cost speed, never the law.
    """
    rate = BLOCK * min(mean, BLOCK_RATE / BLOCK)
    pmf = np.exp(np.arange(_TERMS) * math.log(max(rate, 1e-300)) - rate - _LOG_FACTORIALS)
    past = np.cumsum(pmf[::-1])[::-1]  # past[k]: P(Poisson(rate) >= k)
    fits = [k for k in range(1, FAST_SLOTS) if blocks * past[k + 1] <= RARE_PASSES]
    return fits[0] if fits else FAST_SLOTS


def _thresholds(mean, slots):
    """`P(Poisson(mean) >= k)`, k = 1..slots+1, as 64-bit fixed point: two int32 `[rows, slots + 1]`.

    Words are offset by 2**31, so that signed comparisons order them as the
    unsigned 64-bit values.
    """
    j = ops.convert_to_tensor(np.arange(_TERMS, dtype=np.float64))
    mean = mean[:, None]
    log_mean = ops.log(ops.maximum(mean, 1e-300))
    pmf = ops.exp(j * log_mean - mean - ops.convert_to_tensor(_LOG_FACTORIALS))
    pmf = ops.where(mean > 0.0, pmf, ops.cast(j == 0.0, "float64"))
    tails = ops.flip(ops.cumsum(ops.flip(pmf, axis=1), axis=1), axis=1)[:, 1 : slots + 2]
    scaled = tails * 2.0**32
    high = ops.floor(scaled)
    low = ops.floor((scaled - high) * 2.0**32)
    return ops.cast(high - 2.0**31, "int32"), ops.cast(low - 2.0**31, "int32")


def _below(words, high, low):
    return (words[0] < high) | ((words[0] == high) & (words[1] < low))


def _count(words, thresholds, slots):
    """`min(Y, slots)` for `U = (words[0], words[1])`, `Y = #{k: U < T_k}`. Unrolled: the fast path."""
    high, low = thresholds
    count = ops.zeros(ops.shape(words[0]), "int32")
    for high_k, low_k in zip(ops.unstack(high[:, :slots], axis=1), ops.unstack(low[:, :slots], axis=1)):
        count += ops.cast(_below(words, high_k, low_k), "int32")
    return count


def _field(words, j):
    """The 3-bit cell of slot `j`: ten fields a word, from the third word on."""
    return ops.bitwise_and(ops.right_shift(words[2 + j // 10], 3 * (j % 10)), 7)


def _words(counters, key, count):
    """`count` hashed words per counter: word `w` of counter `c` hashes `8 c + w`.

    `8 c + w` is `8 c ^ w` (w < 8), so the word index goes into the key and
    every word hashes the same counters: TensorFlow would fold `8 c + w`
    into a constant of its own per word, in the compiled step.
    """
    lanes = counters * 8
    return [backend.hash32(lanes, ops.bitwise_xor(key, np.asarray([w, 0], np.int32))) for w in range(count)]


class _Pass:
    """The dense pass over the segments of every dense group of a layout, at one Poisson mean per cell.

    Each segment gets a multiple of `ROW_BLOCKS` blocks (on XLA:CPU an odd
    row length runs the elementwise code several times slower), the groups'
    blocks one after another; trials landing on lanes past a segment are
    dropped and not counted, which leaves every cell its own `Poisson(mu)`.
    One mean for all segments makes one threshold table and one pass (one
    compile) whatever the number of groups.
    """

    def __init__(self, layout, dense, mean):
        bounds = np.cumsum([0] + [count for _, count, _ in layout.groups])
        self.parts = []  # (group, first segment, count, size, blocks per segment, first block)
        block = 0
        for g, ((_, count, size), on) in enumerate(zip(layout.groups, dense)):
            if on:
                blocks = lanes(count, size) // (count * BLOCK)
                self.parts.append((g, int(bounds[g]), count, size, blocks, block))
                block += count * blocks
        self.blocks = block
        self.fast = fast_slots(mean, block)
        self.sizes = np.concatenate([np.full(count, size, np.float64) for _, _, count, size, _, _ in self.parts])

    def segments(self, values):
        """`values` `[segments]` of the layout, restricted to the pass's segments, in its order."""
        pieces = [values[first : first + count] for _, first, count, _, _, _ in self.parts]
        return ops.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]

    def draw(self, mean, key, finish):
        """`finish(lanes, total)` of int32 `[blocks, 8]` Poisson(`mean`) counts of every lane and the
        trials landing in each segment of the pass (lanes past it excluded).

        `finish` runs inside both branches of the rare-path `cond`: XLA then
        unpacks the lanes straight into what `finish` builds, with no copy.
        """
        fast = self.fast
        words = _words(ops.arange(self.blocks, dtype="int32") * BLOCK, key, 2 + -(-fast // 10))
        thresholds = _thresholds(ops.reshape(mean * BLOCK, [1]), ALL_SLOTS)
        # Up to fast + 1: a block above fast is past its fast slots. The count is
        # read only by the packing and by plain reductions, so that XLA keeps it
        # in memory rather than redoing its hashing in each use.
        count = _count(words, thresholds, fast + 1)
        packed = ops.zeros_like(count)
        for j in range(fast):
            packed += ops.where(j < count, ops.left_shift(1, 4 * _field(words, j)), 0)
        outside = []
        for _, _, rows, size, blocks, first in self.parts:
            # Trials on the lanes past the segment, all in its last blocks.
            tail = _unpack(ops.reshape(packed[first : first + rows * blocks], [rows, blocks])[:, size // BLOCK :])
            outside.append(ops.sum(ops.where(_inside(size, blocks)[size // BLOCK :], 0, tail), axis=(1, 2)))
        total = self._per_segment(count) - (ops.concatenate(outside, axis=0) if len(outside) > 1 else outside[0])

        def more_trials():
            past = count > fast  # these blocks placed fast trials, not fast + 1
            within = total - self._per_segment(ops.cast(past, "int32"))
            return finish(*self._more_trials(_unpack(packed), past & self._real(), within, thresholds, key))

        # The branches also keep XLA from redoing the draw for each lane.
        return ops.cond(ops.max(count) > fast, more_trials, lambda: finish(_unpack(packed), total))

    def _per_segment(self, per_block):
        """Sums of int32 `per_block` `[blocks]` over each segment's blocks.

        By rows of ROW_BLOCKS blocks first (no row straddles two segments), over
        every block at once: not one reduction per slice of `per_block`.
        """
        by_row = ops.sum(ops.reshape(per_block, [-1, ROW_BLOCKS]), axis=1)
        sums = []
        for _, _, rows, _, blocks, first in self.parts:
            within = by_row[first // ROW_BLOCKS : (first + rows * blocks) // ROW_BLOCKS]
            sums.append(ops.sum(ops.reshape(within, [rows, blocks // ROW_BLOCKS]), axis=1))
        return ops.concatenate(sums, axis=0) if len(sums) > 1 else sums[0]

    def _real(self):
        """Whether each block holds a cell (the rest are padding, whose trials all land outside)."""
        real = [ops.tile(ops.arange(blocks, dtype="int32") < -(-size // BLOCK), [rows])
                for _, _, rows, size, blocks, _ in self.parts]
        return ops.concatenate(real, axis=0) if len(real) > 1 else real[0]

    def _more_trials(self, lanes, past, total, thresholds, key):
        """Adds the trials past the fast slots of each block flagged in `past`, `BATCH` blocks at a time."""
        high, low = thresholds
        slot = ops.arange(self.fast, ALL_SLOTS, dtype="int32")
        pending = ops.cast(past, "int32")
        batch = min(BATCH, self.blocks)
        parts = np.asarray([part[1:] for part in self.parts], np.int64).T  # first segment, count, size, blocks, first block
        segment_of_part = ops.convert_to_tensor((np.cumsum(parts[1]) - parts[1]).astype(np.int32))
        size_of, blocks_of, first_of = (ops.convert_to_tensor(row.astype(np.int32)) for row in parts[2:])

        def body(done, lanes, total):
            flagged, index = ops.top_k(pending - done, batch, sorted=False)
            live = flagged > 0
            part = ops.sum(ops.cast(index[:, None] >= first_of[None, 1:], "int32"), axis=1)
            local = index - backend.gather(first_of, part)
            blocks = backend.gather(blocks_of, part)
            segment, block = backend.gather(segment_of_part, part) + local // blocks, local % blocks
            words = _words(index * BLOCK, key, 2 + -(-ALL_SLOTS // 10))
            below = _below([w[:, None] for w in words[:2]], high[:, :ALL_SLOTS], low[:, :ALL_SLOTS])
            trials = ops.sum(ops.cast(below, "int32"), axis=1)
            fields = ops.stack(words[2:], axis=1)  # [batch, 4]
            field = ops.bitwise_and(ops.right_shift(ops.take(fields, slot // 10, axis=1), 3 * (slot % 10)), 7)
            extra = live[:, None] & (slot < trials[:, None])
            lanes = backend.scatter_add(lanes, ops.reshape(index[:, None] * BLOCK + field, [-1]), ops.reshape(extra, [-1]))
            inside = extra & (block[:, None] * BLOCK + field < backend.gather(size_of, part)[:, None])
            total = backend.scatter_add(total, ops.repeat(segment, ALL_SLOTS - self.fast), ops.reshape(inside, [-1]))
            return backend.scatter_add(done, index, live), lanes, total

        state = (ops.zeros_like(pending), ops.reshape(lanes, [-1]), total)
        _, lanes, total = ops.while_loop(lambda done, lanes, total: ops.any(pending > done), body, state)
        return ops.reshape(lanes, [self.blocks, BLOCK]), total


def _inside(size, blocks):
    """Whether each lane `[blocks, 8]` of a segment of `size` cells is one of its cells."""
    lane = ops.arange(blocks * BLOCK, dtype="int32")
    return ops.reshape(lane < size, [blocks, BLOCK])


def _unpack(packed):
    """The 4-bit fields of `packed` `[...]` as int32 `[..., 8]`."""
    shifts = ops.convert_to_tensor(np.arange(0, 4 * BLOCK, 4, dtype=np.int32))
    return ops.bitwise_and(ops.right_shift(packed[..., None], shifts), 15)


def place(length, layout, dense, uniform, seed, expected_mean):
    """Counts `[length]` of the dense pass over the groups flagged in `dense`, and the trials left per segment.

    Every cell of the pass gets `Poisson(mu)`, one `mu` for all: the least of
    the segments' `lambda / d`. Any mean keeps the law; the least keeps
    `M <= U` in every segment but with probability about 3e-5 each.

    Args:
        length: Python int, cells of the flat vector.
        layout: the `Segments` drawn in.
        dense: Python bools, one per group of `layout`.
        uniform: float64 `[segments]`, the uniform trials `U` per segment.
        seed: stateless seed, int32 `[2]`.
        expected_mean: Python float, the mean `plan` expects: sizes the fast
            path (`fast_slots`), not the law.

    Returns:
        `(counts, left)`: int32 `[length]`, and float64 `[segments]` `U - M`.
    """
    dense_pass = _Pass(layout, dense, expected_mean)
    u = dense_pass.segments(uniform)
    spare = ops.maximum(u - SPARE[0] * ops.sqrt(u) - SPARE[1], 0.0)
    mean = ops.minimum(ops.min(spare / ops.convert_to_tensor(dense_pass.sizes)), BLOCK_RATE / BLOCK)
    finish = functools.partial(_counts_and_left, length, layout, dense_pass, uniform)
    return dense_pass.draw(mean, backend.fold_in(seed, 4), finish)


def _counts_and_left(length, layout, dense_pass, uniform, lanes, total):
    """`place`'s result from the pass's `lanes` `[blocks, 8]` and its `total` per segment of the pass."""
    # Where M > U the segment's pass is dropped and its U trials all go
    # one by one: that depends on M alone, so the law given M stands.
    total = ops.cast(total, "float64")
    kept = total <= dense_pass.segments(uniform)
    drawn, position = {}, 0
    for g, _, count, size, blocks, first in dense_pass.parts:
        part = slice(position, position + count)
        cells = ops.reshape(lanes[first : first + count * blocks], [count, blocks * BLOCK])[:, :size]
        drawn[g] = (ops.reshape(ops.where(kept[part, None], cells, 0), [-1]), ops.where(kept[part], total[part], 0.0))
        position += count
    bounds = np.cumsum([0] + [count for _, count, _ in layout.groups])
    pieces, left, position = [], [], 0
    for g in sorted(range(len(layout.groups)), key=lambda g: layout.groups[g][0]):
        start, count, size = layout.groups[g]
        if start > position:
            pieces.append(ops.zeros([start - position], "int32"))
        pieces.append(drawn[g][0] if g in drawn else ops.zeros([count * size], "int32"))
        position = start + count * size
    if length > position:
        pieces.append(ops.zeros([length - position], "int32"))
    for g, (start, count, size) in enumerate(layout.groups):
        u = uniform[bounds[g] : bounds[g] + count]
        left.append(u - drawn[g][1] if g in drawn else u)
    counts = ops.concatenate(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    return counts, ops.concatenate(left, axis=0) if len(left) > 1 else left[0]

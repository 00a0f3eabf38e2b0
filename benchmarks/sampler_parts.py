"""What the parts of a ZIM draw cost under XLA on this machine, against an SGD step.

The per-trial floor of an exact sampler is one random number and one
scatter-add per trial; the per-parameter floor is one pass over the gradient
(its block sums) and one dense update. This times each against SGD's step on
one vector of d parameters, interleaved in one process:

- sgd: `w -= 0.01 g` (reads w and g, writes w);
- block sums: float64 sums of 16 consecutive |g| (the tree's first level), and
  one full float64 reduction (a scalar loop on CPU);
- uniform f64: `trials` float64 uniforms (two Philox words each), drawn as
  the sampler draws them, from a run-time seed;
- scatter random / paged / sorted: `trials` scatter-adds into an int32 count
  vector, at random positions, random within pages of 16,384 cells visited in
  order, and in sorted order;
- zim: `keras_zim.ZIM(rate)` applying the whole step.

With `--model`, the dense passes of a ZIM step on a real model's variables
instead (what a step costs before any trial): the flat copy of all gradients
(the sampler gathers the leaves of its tree from it), float64 block sums of
that copy, a zeroed count vector, and the update `w <- w - x sign(g)` of every
variable from the counts (and from int8 counts, the narrowest a count vector
could be); two floors, timing stand-ins that are not the law:

- dense floor: the float64 block sums of every gradient, read where it is
  (the mass that any exact sampler needs), and the update from int8 counts:
  what a sampler that writes a count vector must at least do, with no flat
  copy, no trials and no search;
- sparse floor, r=0.01: the same block sums, then per variable the trials a
  uniform share would give it at `n = d` (`chunk_size(size, 0.01)` uniform
  cells), `sign(g)` gathered there and scatter-subtracted from the weights in
  place: no count vector, but no binomials, search or bounds either, and one
  scatter compiled per variable;

then the trials alone at n = d (`r d` float64
uniforms, each floored to a cell and scatter-added into a count vector that
is never zeroed: one draw and one scatter-add per trial, as the sampler does
them, and no dense pass), Adam, and ZIM with almost no trials (`r = 1e-6`),
at `r = 0.01` and at its defaults.

    python benchmarks/sampler_parts.py --size 1e7 --rate 0.1
    python benchmarks/sampler_parts.py --model transformer
"""

import argparse
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_zim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_models import fixed_gradients, shapes_of  # noqa: E402  (benchmarks/real_models.py, beside this file)


def parts(size, trials):
    rng = np.random.default_rng(0)
    g = tf.constant(rng.normal(0.0, 1e-3, size).astype("float32"))
    w = tf.Variable(tf.zeros([size]))
    counts = tf.Variable(tf.zeros([size], tf.int32))
    blocks = tf.Variable(tf.zeros([size // 16], tf.float64))
    total = tf.Variable(tf.zeros([], tf.float64))
    seed = tf.Variable([1, 2])
    uniforms = tf.Variable(tf.zeros([trials], tf.float64))
    cells = {
        "random": rng.integers(0, size, trials),
        "paged": np.sort(rng.integers(0, size // 16384, trials)) * 16384 + rng.integers(0, 16384, trials),
        "sorted": np.sort(rng.integers(0, size, trials)),
    }
    whole = size // 16 * 16
    functions = {
        "sgd": lambda: w.assign_sub(0.01 * g)[0],
        "block sums": lambda: blocks.assign(tf.reduce_sum(tf.reshape(tf.abs(tf.cast(g[:whole], tf.float64)), [-1, 16]), -1))[0],
        "full reduction": lambda: total.assign(tf.reduce_sum(tf.abs(tf.cast(g, tf.float64)))),
        "uniform f64": lambda: uniforms.assign(_uniforms(seed, trials))[0],
    }
    for name, index in cells.items():
        index = tf.constant(index.astype("int32")[:, None])
        functions[f"scatter {name}"] = lambda index=index: counts.scatter_nd_add(index, tf.ones([trials], tf.int32))[0]
    optimizer = keras_zim.ZIM(trials / size, seed=0)
    optimizer.build([w])
    functions["zim"] = lambda: optimizer.apply([g], [w]) or optimizer.iterations
    return {name: tf.function(f, jit_compile=True) for name, f in functions.items()}


def _uniforms(seed, trials):
    """float64 uniforms as the sampler draws them, from a run-time seed (XLA folds a constant seed into the kernel)."""
    return keras_zim.backend.uniform([trials], keras_zim.backend.fold_in(seed, 3), "float64")


def _trials_alone(counts, seed, trials):
    """`trials` float64 uniforms, each floored to a cell of `counts` and scatter-added there."""
    size = counts.shape[0]
    cells = tf.minimum(tf.cast(tf.floor(_uniforms(seed, trials) * size), tf.int32), size - 1)
    return counts.scatter_nd_add(cells[:, None], tf.ones([trials], tf.int32))[0]


def dense_parts(shapes):
    """The dense passes of a ZIM step on variables of `shapes`, the trials alone, and whole steps, against SGD."""
    gradients = fixed_gradients(shapes)
    weights = [tf.Variable(tf.zeros(s)) for s in shapes]
    sizes = [int(np.prod(s)) for s in shapes]
    size = sum(sizes)
    flat = tf.Variable(tf.zeros([size]))
    counts = tf.Variable(tf.zeros([size], tf.int32))
    blocks = tf.Variable(tf.zeros([size // 16], tf.float64))
    ends = np.cumsum([0] + sizes)

    def sgd():
        for w, g in zip(weights, gradients):
            w.assign_sub(0.01 * g)
        return weights[0][0]

    def update(counts=counts):
        for w, g, start, end in zip(weights, gradients, ends[:-1], ends[1:]):
            c = tf.reshape(counts[start:end], w.shape)
            w.assign(tf.where(c > 0, tf.clip_by_value(w - tf.cast(c, w.dtype) * tf.sign(g), -2.0**24, 2.0**24), w))
        return weights[0][0]

    narrow = tf.Variable(tf.zeros([size], tf.int8))
    seed = tf.Variable([1, 2])
    arith = keras_zim.sampling._Plain("float64")
    first_level = tf.Variable(tf.zeros([sum(keras_zim.sampling._padded_blocks(n) for n in sizes)], tf.float64))

    def masses():
        """The sampler's float64 block sums of every gradient, read where it is (the mass any exact sampler needs)."""
        sums = [arith.block_sums(arith.weight(tf.reshape(g, [1, -1])))[0] for g in gradients]
        return first_level.assign(tf.concat(sums, 0))[0]

    def dense_floor():
        # What an exact sampler with a dense update must at least do: the masses, then the update.
        update(narrow)
        return masses()

    flat_weights = [tf.Variable(tf.zeros([n])) for n in sizes]

    def sparse_floor(rate=0.01):
        # The masses; per variable, the trials a uniform share gives it, sign(g) there, a scatter into w.
        for j, (w, g, n) in enumerate(zip(flat_weights, gradients, sizes)):
            u = keras_zim.backend.uniform([keras_zim.sampling.chunk_size(n, rate)], keras_zim.backend.fold_in(seed, j), "float64")
            cells = tf.minimum(tf.cast(tf.floor(u * n), tf.int32), n - 1)
            w.scatter_nd_sub(cells[:, None], tf.sign(tf.gather(tf.reshape(g, [-1]), cells)))
        return masses()

    whole = size // 16 * 16
    functions = {
        "sgd": sgd,
        "flat copy": lambda: flat.assign(tf.concat([tf.reshape(g, [-1]) for g in gradients], 0))[0],
        "block sums": lambda: blocks.assign(tf.reduce_sum(tf.reshape(tf.abs(tf.cast(flat[:whole], tf.float64)), [-1, 16]), -1))[0],
        "zeroed counts": lambda: counts.assign(tf.tensor_scatter_nd_add(tf.zeros([size], tf.int32), [[0]], [0]))[0],
        "update from counts": update,
        "update from int8 counts": lambda: update(narrow),
        "dense floor": dense_floor,
        "sparse floor, r=0.01": sparse_floor,
    }
    for rate in (0.1, 0.01):
        functions[f"trials alone, r={rate}"] = lambda trials=int(rate * size): _trials_alone(counts, seed, trials)
    adam, adam_weights = keras.optimizers.Adam(), [keras.Variable(np.zeros(s, "float32")) for s in shapes]
    adam.build(adam_weights)
    functions["adam"] = lambda: adam.apply(gradients, adam_weights) or adam.iterations
    for name, rate in (("zim r=1e-6", 1e-6), ("zim r=0.01", 0.01), ("zim", 0.1)):
        optimizer = keras_zim.ZIM(rate, seed=0)
        optimizer.build(weights)
        functions[name] = lambda optimizer=optimizer: optimizer.apply(gradients, weights) or optimizer.iterations
    functions.update(leaf_reads(gradients, sizes))
    return {name: tf.function(f, jit_compile=True) for name, f in functions.items()}


def leaf_reads(gradients, sizes, trials=512, window=32):
    """The 16 leaves of `trials` searched cells: from a flat copy of the gradients, or from each gradient.

    "by variable" sorts the cells by variable and reads each run of `window`
    from its own gradient through a switch of one branch per variable: no
    copy, but a loop step per run.
    """
    size, flats = sum(sizes), [tf.reshape(g, [-1]) for g in gradients]
    starts = tf.constant(np.cumsum([0] + sizes[:-1]).astype(np.int32))
    cells = tf.Variable(np.random.default_rng(1).integers(0, size, trials).astype(np.int32))
    leaves = tf.Variable(tf.zeros([trials, 16]))
    sixteen = tf.range(16)

    def from_copy():
        index = tf.minimum((cells // 16)[:, None] * 16 + sixteen, size - 1)
        return leaves.assign(tf.gather(tf.concat(flats, 0), index))[0, 0]

    def by_variable():
        owner = tf.reduce_sum(tf.cast(cells[:, None] >= starts[None, 1:], tf.int32), 1)
        order = tf.argsort(owner)
        owners = tf.concat([tf.gather(owner, order), tf.fill([window], -1)], 0)
        local = tf.concat([tf.gather(cells - tf.gather(starts, owner), order), tf.zeros([window], tf.int32)], 0)

        def read(j, at):
            index = tf.clip_by_value((tf.slice(local, [at], [window]) // 16)[:, None] * 16 + sixteen, 0, sizes[j] - 1)
            return tf.gather(flats[j], index)

        def body(at, found):
            mine = tf.slice(owners, [at], [window]) == owners[at]
            got = tf.switch_case(owners[at], [lambda j=j: read(j, at) for j in range(len(flats))])
            rows = (at + tf.range(window))[:, None]
            found = tf.tensor_scatter_nd_update(found, rows, tf.where(mine[:, None], got, tf.gather_nd(found, rows)))
            return at + tf.reduce_sum(tf.cast(mine, tf.int32)), found

        start = (tf.constant(0), tf.zeros([trials + window, 16]))
        found = tf.while_loop(lambda at, found: at < trials, body, start)[1][:trials]
        return leaves.assign(tf.gather(found, tf.math.invert_permutation(order)))[0, 0]

    return {f"{trials} leaf reads: flat copy": from_copy, f"{trials} leaf reads: by variable": by_variable}


def table(compiled, title, rounds):
    """Markdown rows `| part | median ms | x SGD |` (and `x Adam` if there is an `"adam"`), timed interleaved,
    and each part's first call (trace, XLA compile and one run, after the parts before it)."""
    first = {}
    for name, function in compiled.items():
        start = time.perf_counter()
        np.asarray(function())
        first[name] = time.perf_counter() - start
        function()
    times = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, function in compiled.items():
            start = time.perf_counter()
            np.asarray(function())
            times[name].append(time.perf_counter() - start)
    baselines = [(label, np.median(times[name])) for name, label in (("sgd", "SGD"), ("adam", "Adam")) if name in times]
    lines = [f"| part ({title}) | median ms | " + " | ".join(f"x {label}" for label, _ in baselines) + " | first call s |",
             "| --- | --- | " + " | ".join("---" for _ in baselines) + " | --- |"]
    for name, t in times.items():
        ratios = " | ".join(f"{np.median(t) / baseline:.2f}" for _, baseline in baselines)
        lines.append(f"| {name} | {1e3 * np.median(t):.2f} | {ratios} | {first[name]:.2f} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--rate", type=float, default=0.1, help="trials = rate * size (ZIM's n r at n = d)")
    parser.add_argument("--model", default=None, help="transformer or resnet50: the dense passes on its variables")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    size = int(args.size)
    if args.model:
        shapes = shapes_of(args.model)
        compiled = dense_parts(shapes)
        title = f"{args.model}, {len(shapes)} variables, {sum(int(np.prod(s)) for s in shapes):,} parameters"
    else:
        compiled = parts(size, int(args.rate * size))
        title = f"d = {size:.0e}, {int(args.rate * size):,} trials"
    print("\n".join(table(compiled, title, args.rounds)))

if __name__ == "__main__":
    main()

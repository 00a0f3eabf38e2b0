"""What the parts of a ZIM draw cost under XLA on this machine, against an SGD step.

The per-trial floor of an exact sampler is one random number and one
scatter-add per trial; the per-parameter floor is one pass over the gradient
(its block sums) and one dense update. This times each against SGD's step on
one vector of d parameters, interleaved in one process:

- sgd: `w -= 0.01 g` (reads w and g, writes w);
- block sums: float64 sums of 16 consecutive |g| (the tree's first level), and
  one full float64 reduction (a scalar loop on CPU);
- uniform f64: `trials` float64 uniforms (two Philox words each);
- scatter random / paged / sorted: `trials` scatter-adds into an int32 count
  vector, at random positions, random within pages of 16,384 cells visited in
  order, and in sorted order;
- zim: `keras_zim.ZIM(rate)` applying the whole step.

    python benchmarks/sampler_parts.py --size 1e7 --rate 0.1
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import keras_zim


def parts(size, trials):
    rng = np.random.default_rng(0)
    g = tf.constant(rng.normal(0.0, 1e-3, size).astype("float32"))
    w = tf.Variable(tf.zeros([size]))
    counts = tf.Variable(tf.zeros([size], tf.int32))
    blocks = tf.Variable(tf.zeros([size // 16], tf.float64))
    total = tf.Variable(tf.zeros([], tf.float64))
    seed = tf.constant([1, 2])
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
        "uniform f64": lambda: total.assign(tf.reduce_max(tf.random.stateless_uniform([trials], seed, dtype=tf.float64))),
    }
    for name, index in cells.items():
        index = tf.constant(index.astype("int32")[:, None])
        functions[f"scatter {name}"] = lambda index=index: counts.scatter_nd_add(index, tf.ones([trials], tf.int32))[0]
    optimizer = keras_zim.ZIM(trials / size, seed=0)
    optimizer.build([w])
    functions["zim"] = lambda: optimizer.apply([g], [w]) or optimizer.iterations
    return {name: tf.function(f, jit_compile=True) for name, f in functions.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--rate", type=float, default=0.1, help="trials = rate * size (ZIM's n r at n = d)")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    size = int(args.size)
    compiled = parts(size, int(args.rate * size))
    for function in compiled.values():
        function()
        function()
    times = {name: [] for name in compiled}
    for _ in range(args.rounds):
        for name, function in compiled.items():
            start = time.perf_counter()
            np.asarray(function())
            times[name].append(time.perf_counter() - start)
    sgd = np.median(times["sgd"])
    print(f"| part (d = {size:.0e}, {int(args.rate * size)} trials) | median ms | x SGD |")
    print("| --- | --- | --- |")
    for name, t in times.items():
        print(f"| {name} | {1e3 * np.median(t):.2f} | {np.median(t) / sgd:.2f} |")


if __name__ == "__main__":
    main()

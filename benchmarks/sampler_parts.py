"""XLA-on-CPU facts behind the sampler's design, measured side by side.

Each line is a pair of ways to compute the same thing, timed interleaved in
one process (minimum over rounds: the least disturbed run), and the ratio.

- tree: the first level of block sums of |g| in float64, as `tf.reduce_sum`
  over groups of 16 (used) or as 16 elementwise adds of strided slices.
- walk: `_SumTree.count_at_most` for `trials` targets, the levels walked in a
  `tf.while_loop` (used) or unrolled in straight-line code (XLA then fuses
  each level's 16 steps into the next level's gather and redoes them for
  every child).

    python benchmarks/sampler_parts.py --size 1e7 --trials 65536
"""

import argparse
import time

import numpy as np
import tensorflow as tf

from keras_zim import sampling


def _level_sums_by_adds(grouped):
    total = grouped[..., 0]
    for k in range(1, 16):
        total += grouped[..., k]
    return total


def _unrolled_count(tree, target):
    """`count_at_most` with the level loop unrolled (one row)."""
    node, remaining = tf.zeros(target.shape, tf.int32), target
    start = 0
    for groups in tree.groups:
        children = tf.gather(tree.table[start : start + groups], node)
        chosen, passed = tree._descend(children, remaining)
        node, remaining, start = node * 16 + chosen, remaining - passed, start + groups
    chosen, _ = tree._descend(tree.weight(tf.gather(tree.leaves[0], node)), remaining)
    return node * 16 + chosen


def functions(size, trials):
    g = tf.constant(np.random.default_rng(0).normal(size=[1, size]).astype("float32"))
    weight = lambda raw: tf.abs(tf.cast(raw, tf.float64))  # noqa: E731
    grouped = tf.reshape(g, [-1, 16]) if size % 16 == 0 else None
    jit = lambda f: tf.function(f, jit_compile=True, autograph=False)  # noqa: E731

    def targets(tree):
        u = tf.random.stateless_uniform([trials], [1, 2], dtype=tf.float64, alg="philox")
        return u * tree.total[0]

    def walk(unrolled):
        def run():
            tree = sampling._SumTree(g, weight)
            t = targets(tree)
            found = _unrolled_count(tree, t) if unrolled else tree.count_at_most(t[None])[0]
            return tf.reduce_sum(found)

        return jit(run)

    pairs = {
        "walk": (walk(False), walk(True), jit(lambda: tf.reduce_sum(targets(sampling._SumTree(g, weight))))),
    }
    if grouped is not None:
        pairs["tree"] = (
            jit(lambda: tf.reduce_sum(weight(grouped), axis=-1)),
            jit(lambda: _level_sums_by_adds(weight(grouped))),
            None,
        )
    return pairs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1e7)
    parser.add_argument("--trials", type=int, default=65536)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    pairs = functions(int(args.size), args.trials)
    runs = {(name, k): f for name, fs in pairs.items() for k, f in enumerate(fs) if f is not None}
    for f in runs.values():
        f()
    times = {key: [] for key in runs}
    for _ in range(args.rounds):
        for key, f in runs.items():
            start = time.perf_counter()
            f().numpy()
            times[key].append(time.perf_counter() - start)
    best = {key: 1e3 * min(t) for key, t in times.items()}
    print(f"d = {int(args.size):.0e}, {args.trials} walk targets; min ms over {args.rounds} rounds")
    print("| part | used | alternative | alternative / used |")
    print("| --- | --- | --- | --- |")
    for name, fs in pairs.items():
        used, other = best[(name, 0)], best[(name, 1)]
        if fs[2] is not None:  # subtract the shared tree build and targets
            used, other = used - best[(name, 2)], other - best[(name, 2)]
        print(f"| {name} | {used:.2f} ms | {other:.2f} ms | {other / used:.1f} |")


if __name__ == "__main__":
    main()

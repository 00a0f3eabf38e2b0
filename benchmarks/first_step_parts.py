"""Where the first step of a ZIM step goes: tracing and XLA compile, part by part.

Each row is a fresh process that builds the step of `benchmarks/real_models.py`
on a model's variables and times tracing it (`get_concrete_function`) and its
first call (XLA compile and one run). A row replaces one part of the sampler
by a stand-in of the same shapes, so that its difference from "zim" is what
that part costs the first step. The stand-ins are for timing only: their
counts are not ZIM's law.

- zim: `ZIM()` as it is (or `scope="variable"`);
- no dense pass: `uniform_share.place` places nothing, all uniform trials
  go one by one;
- no search: `_place_searched` places nothing;
- no binomials: `N` and `U` are their means, not `Binomial` draws;
- counts from the gradient: no sampler at all, every variable's counts are
  `|g| > 1e-3` of its own gradient (the update kernels alone, one per
  distinct shape);
- counts sliced from a loop: the same counts, concatenated, passed through a
  while loop and sliced back per variable at run-time starts, as the
  sampler's count vector is (`sampling._split_counts`);
- padded in place / small sizes as one: every gradient flattened, zero-padded
  and its counts sliced back before the update; "in place" pads nothing, "as
  one" pads each gradient of at most 1,024 entries to 1,024, so that the
  variable scope has fewer size groups (the Transformer 4, not 7). Their
  difference is what the groups cost;
- owner by comparison: the variable scope finds each searched trial's segment
  by comparing its rank with every segment's end (`T x segments` compares a
  chunk), not by walking a second sum tree (`sampling._owner`);
- binomials alone: no step, only the two binomials of the scope
  (`sampling._passing_and_uniform` on one value per segment: 1 in the global
  scope, one per variable in the variable scope), compiled by themselves;
- adam: Keras Adam.

    python benchmarks/first_step_parts.py --model transformer --scope global --rounds 2
    python benchmarks/first_step_parts.py --model transformer --ops zim   # what the trace holds
    python benchmarks/first_step_parts.py --model transformer --scope variable --rows "padded in place" "small sizes as one"
"""

import argparse
import collections
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ROWS = ("zim", "no dense pass", "no search", "no binomials", "counts from the gradient",
        "counts sliced from a loop", "padded in place", "small sizes as one", "owner by comparison",
        "binomials alone", "adam")
SMALL = 1024


def _stand_in(row):
    """Replaces the part of keras_zim's sampler that `row` leaves out."""
    from keras import ops

    from keras_zim import sampling

    if row == "no dense pass":
        sampling.uniform_share.place = lambda length, layout, dense, uniform, seed, expected_mean: (
            ops.zeros([length], "int32"), uniform)
    elif row == "no search":
        sampling._place_searched = lambda counts, *args, **kwargs: counts
    elif row == "no binomials":
        sampling._passing_and_uniform = lambda trials, rate, share, seed: (trials * rate, trials * rate * share)
    elif row == "counts from the gradient":
        sampling.scope_counts = lambda gradients, *args, **kwargs: [
            ops.reshape(ops.cast(ops.abs(g) > 1e-3, "int32"), [-1]) for g in gradients]
    elif row == "counts sliced from a loop":
        def sliced(gradients, *args, **kwargs):
            flat, sizes = sampling.flat_gradients(gradients)
            counts = ops.cast(ops.abs(flat) > 1e-3, "int32")
            counts = ops.while_loop(lambda i, c: i < 1, lambda i, c: (i + 1, c + 1), (0, counts))[1]
            return sampling._split_counts(counts, sizes)

        sampling.scope_counts = sliced
    elif row in ("padded in place", "small sizes as one"):
        draw, least = sampling.scope_counts, SMALL if row == "small sizes as one" else 0

        def padded(gradients, *args, **kwargs):
            flat = [ops.reshape(g, [-1]) for g in gradients]
            counts = draw([ops.pad(f, [[0, max(least - f.shape[0], 0)]]) for f in flat], *args, **kwargs)
            return [c[: f.shape[0]] for c, f in zip(counts, flat)]

        sampling.scope_counts = padded
    elif row == "owner by comparison":
        def owner(layout, counts):
            ends = ops.cumsum(counts)
            return lambda rank: ops.sum(ops.cast(rank[:, None] >= ends[None, :], "int32"), axis=1)

        sampling._owner = owner


def _step(model, scope, row):
    """The step of `row` on `model`'s variables, not yet traced, after one trivial XLA compile."""
    import keras
    import tensorflow as tf

    import keras_zim
    from real_models import fixed_gradients, shapes_of, step_function

    _stand_in(row)
    shapes = shapes_of(model)
    gradients = fixed_gradients(shapes)
    tf.function(lambda: tf.reduce_sum(gradients[0]), jit_compile=True)().numpy()
    if row == "binomials alone":
        from keras_zim import sampling

        segments = len(shapes) if scope == "variable" else 1
        trials = tf.constant(np.full(segments, 1e6))
        draw = lambda: sampling._passing_and_uniform(trials, trials * 0 + 0.1, trials * 0 + 0.999, tf.constant([1, 2]))  # noqa: E731
        return tf.function(lambda: draw()[0], jit_compile=True)
    variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
    optimizer = keras.optimizers.Adam() if row == "adam" else keras_zim.ZIM(scope=scope, seed=0)
    return step_function(optimizer, variables, gradients)


def _one(model, scope, row):
    """Prints `trace_seconds first_call_seconds` for one row, in this fresh process."""
    step = _step(model, scope, row)
    start = time.perf_counter()
    step.get_concrete_function()
    traced = time.perf_counter()
    step().numpy()
    print(traced - start, time.perf_counter() - traced)


def _ops(model, scope, row, top=40):
    """Prints how many graph ops the traced step holds (nested functions included), by keras_zim file and line."""
    graphs, seen = [_step(model, scope, row).get_concrete_function().graph], set()
    by_file, by_line = collections.Counter(), collections.Counter()
    for graph in graphs:
        # A nested function is listed by every graph that holds it: count each once.
        nested = [f.graph for name, f in graph._functions.items() if getattr(f, "graph", None) is not None
                  and name not in seen]
        seen.update(graph._functions)
        graphs += nested
        for op in graph.get_operations():
            frame = next((f for f in reversed(op.traceback or []) if "keras_zim" in f.filename), None)
            where = f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "elsewhere"
            by_line[where] += 1
            by_file[where.split(":")[0]] += 1
    print(f"{sum(by_file.values())} ops in the traced step of {row} ({model}, {scope} scope)")
    for counts in (by_file, by_line):
        print(", ".join(f"{where} {n}" for where, n in counts.most_common(top)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="transformer")
    parser.add_argument("--scope", default="global", choices=("global", "variable"))
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per row, interleaved")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--ops", metavar="ROW", help="print the traced step's ops by keras_zim file and line")
    parser.add_argument("--rows", nargs="+", default=ROWS, choices=ROWS, help="the rows to time (adam always)")
    args = parser.parse_args(argv)
    if args.ops:
        return _ops(args.model, args.scope, args.ops)
    if args.one:
        return _one(args.model, args.scope, args.one)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    rows = [row for row in ROWS if row in args.rows or row == "adam"]
    times = {row: [] for row in rows}
    for _ in range(args.rounds):
        for row in rows:
            command = [sys.executable, os.path.abspath(__file__), "--model", args.model, "--scope", args.scope,
                       "--one", row]
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout.split()
            times[row].append((float(out[-2]), float(out[-1])))
    adam = np.median([sum(t) for t in times["adam"]])
    print(f"| part ({args.model}, {args.scope} scope) | trace s | compile and run s | first step s | x Adam |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        trace, first = np.median([t[0] for t in times[row]]), np.median([t[1] for t in times[row]])
        total = np.median([sum(t) for t in times[row]])
        print(f"| {row} | {trace:.2f} | {first:.2f} | {total:.2f} | {total / adam:.2f} |")


if __name__ == "__main__":
    main()

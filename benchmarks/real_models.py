"""ZIM on real models: `optimizer.apply` under XLA against Keras SGD and Adam.

Every optimizer updates the trainable variables of a real model (a Transformer
encoder of 99 variables, `keras.applications.ResNet50` of 214) with the same
fixed random gradients N(0, 1e-3), each step compiled with
`jit_compile=True`. Candidates are timed interleaved, round after round, in
one process; the tables give medians and ratios to SGD's median measured in
the same run, and the compile time of the first step.

    python benchmarks/real_models.py                       # both models and one variable of 1e6 and 1e7
    python benchmarks/real_models.py --models transformer --rounds 5
    python benchmarks/real_models.py --split                # 1e6 parameters in 1, 10, 100, 1000 variables
    python benchmarks/real_models.py --first-step transformer zim   # one first step, in this fresh process

The compile column of the tables is the first step in the shared process
(after the candidates before it); `first_step_seconds` measures each
candidate's first step in a fresh process of its own instead.
"""

import argparse
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_zim

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MODELS, resnet50, transformer  # noqa: E402,F401  (benchmarks/models.py: TF-free builders)


def shapes_of(name):
    """Trainable variable shapes of a model, or of `d` parameters in `v` variables for "1e6" / "1e6x100"."""
    if name in MODELS:
        return [tuple(v.shape) for v in MODELS[name]().trainable_variables]
    size, _, parts = name.partition("x")
    size, parts = int(float(size)), int(parts or 1)
    return [(size // parts,)] * parts


def candidates():
    """(name, optimizer factory): the defaults first, then the variants."""
    return [
        ("sgd", lambda: keras.optimizers.SGD(0.01)),
        ("adam", lambda: keras.optimizers.Adam()),
        ("zim", lambda: keras_zim.ZIM(seed=0)),
        ("zim r=0.01", lambda: keras_zim.ZIM(0.01, seed=0)),
        ("zim variable", lambda: keras_zim.ZIM(scope="variable", seed=0)),
    ]


def step_function(optimizer, variables, gradients):
    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def step():
        optimizer.apply(gradients, variables)
        return optimizer.iterations

    return step


def fixed_gradients(shapes):
    """Gradients N(0, 1e-3) of `shapes`, the same in every process."""
    rng = np.random.default_rng(0)
    return [tf.constant(rng.normal(0.0, 1e-3, s).astype("float32")) for s in shapes]


def time_apply(shapes, rounds, names=None):
    """{name: (median seconds per step, compile seconds of the first step)}; SGD and Adam always run."""
    gradients = fixed_gradients(shapes)
    steps, compile_s = {}, {}
    for name, make in candidates():
        if names and name not in names and name not in ("sgd", "adam"):
            continue
        variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
        steps[name] = step_function(make(), variables, gradients)
        start = time.perf_counter()
        steps[name]().numpy()
        compile_s[name] = time.perf_counter() - start
        steps[name]().numpy()
    return {name: (seconds, compile_s[name]) for name, seconds in interleaved(steps, rounds).items()}


def interleaved(steps, rounds):
    """{name: median seconds} of the compiled `steps`, timed in `rounds` rounds that run each once."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step().numpy()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def first_step_seconds(case, name):
    """Seconds of the first `apply` (tracing and XLA compile) of candidate `name` in a fresh process.

    The process compiles a trivial XLA function first, so that starting
    TensorFlow and XLA counts for no candidate.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.abspath(__file__), "--first-step", case, name]
    return float(subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout.split()[-1])


def _first_step(case, name):
    shapes = shapes_of(case)
    gradients = fixed_gradients(shapes)
    tf.function(lambda: tf.reduce_sum(gradients[0]), jit_compile=True)().numpy()
    variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
    step = step_function(dict(candidates())[name](), variables, gradients)
    start = time.perf_counter()
    step().numpy()
    print(time.perf_counter() - start)


def table(rows, baseline="sgd"):
    """Markdown rows `| case | optimizer | ms | x SGD | x Adam | compile s |` for `{case: time_apply(...)}`."""
    lines = ["| case | optimizer | median ms | x SGD | x Adam | compile s |", "| --- | --- | --- | --- | --- | --- |"]
    for case, result in rows.items():
        sgd, adam = result[baseline][0], result.get("adam", (float("nan"),))[0]
        for name, (seconds, compile_seconds) in result.items():
            lines.append(
                f"| {case} | {name} | {seconds * 1e3:.2f} | {seconds / sgd:.2f} | {seconds / adam:.2f} | {compile_seconds:.1f} |"
            )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["transformer", "resnet50", "1e6", "1e7"])
    parser.add_argument("--split", action="store_true", help="1e6 parameters in 1, 10, 100 and 1000 variables")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", nargs="+", default=None, help="ZIM variants to time beside SGD and Adam")
    parser.add_argument("--first-step", nargs=2, metavar=("CASE", "NAME"), help="time one first step and exit")
    args = parser.parse_args(argv)
    if args.first_step:
        return _first_step(*args.first_step)
    cases = ["1e6", "1e6x10", "1e6x100", "1e6x1000"] if args.split else args.models
    rows = {}
    for case in cases:
        shapes = shapes_of(case)
        rows[f"{case} ({len(shapes)} variables)"] = time_apply(shapes, args.rounds, args.only)
        print("\n".join(table({case: rows[f"{case} ({len(shapes)} variables)"]})[2:]), flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    main()

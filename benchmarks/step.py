"""Cost of one optimizer step under XLA: ZIM against Keras SGD and Adam.

Every optimizer updates the same variables with the same gradient, each step
compiled with `jit_compile=True`; the candidates are timed interleaved, round
after round, in one process, and reported as medians and as ratios to SGD's
median, so a noisy machine moves them together.

    python benchmarks/step.py --sizes 1e5 1e6 1e7 --rounds 30
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import keras_zim


def _step_function(optimizer, variables, gradients):
    optimizer.build(variables)

    @tf.function(jit_compile=True)
    def step():
        optimizer.apply(gradients, variables)
        return optimizer.iterations

    return step


def candidates(size, rate=0.01):
    """(name, optimizer factory) pairs compared at `size` parameters."""
    return [
        ("sgd", lambda: keras.optimizers.SGD(rate)),
        ("adam", lambda: keras.optimizers.Adam()),
        ("zim n=d", lambda: keras_zim.ZIM(rate, seed=0)),
        ("zim n=d/100", lambda: keras_zim.ZIM(rate, trials=max(1, size // 100), seed=0)),
    ]


def time_steps(size, rounds, rate=0.01, shapes=None):
    """Median seconds per step of each candidate at `size` parameters.

    `shapes` splits the parameters into variables (default: one vector).
    """
    shapes = shapes or [(size,)]
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(size=s).astype("float32")) for s in shapes]
    steps = {}
    for name, make in candidates(size, rate):
        variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
        steps[name] = _step_function(make(), variables, gradients)
        steps[name]().numpy()  # compile
        steps[name]().numpy()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step().numpy()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e5, 1e6])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    print("| d | optimizer | median ms | x SGD |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        medians = time_steps(int(size), args.rounds, args.rate)
        for name, seconds in medians.items():
            print(f"| {int(size):.0e} | {name} | {seconds * 1e3:.3f} | {seconds / medians['sgd']:.2f} |")


if __name__ == "__main__":
    main()

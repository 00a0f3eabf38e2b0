"""The sampler's two precisions on the current backend: one compiled draw of one variable.

    python benchmarks/precision.py                 # TensorFlow: float64 and float32x2
    KERAS_BACKEND=jax python benchmarks/precision.py
    KERAS_BACKEND=jax JAX_ENABLE_X64=1 python benchmarks/precision.py

Times `keras_zim.sampling.scope_counts` (global scope, n = d, c = 1, N(0, 1e-3) gradients)
for each precision the backend has, medians of `--rounds` calls after a warm-up.
"""

import argparse
import time

import keras
import numpy as np
from keras import ops

from keras_zim import backend, sampling


def median_ms(fn, *args, rounds):
    ops.convert_to_numpy(fn(*args)[0])
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        ops.convert_to_numpy(fn(*args)[0])
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1e6)
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    d = int(args.size)
    gradient = ops.convert_to_tensor(np.random.default_rng(0).normal(0, 1e-3, d).astype("float32"))
    seed = ops.convert_to_tensor([1, 2], "int32")
    precisions = ["float64", "float32x2"] if backend.has_float64() else ["float32x2"]
    print(f"| backend | d | r | {' | '.join(precisions)} |")
    print("| --- | --- | --- |" + " --- |" * len(precisions))
    for rate in args.rates:
        cells = []
        for precision in precisions:
            draw = backend.jit(lambda g, s, p=precision: sampling.scope_counts(
                [g], "global", rate, s, [d], 1.0, [sampling.chunk_size(d, rate)], precision=p))
            cells.append(f"{median_ms(draw, gradient, seed, rounds=args.rounds):.1f} ms")
        print(f"| {keras.backend.backend()} | {d:.0e} | {rate} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()

"""The benchmark suite: writes docs/performance.md.

    python benchmarks/run.py                 # the full suite (about 10 minutes on 2 cores)
    python benchmarks/run.py --quick         # fewer rounds, no 1e7 memory run

Every number is a median over rounds that alternate the candidates in one
process, reported next to a baseline measured in the same run (these machines
are noisy): optimizer steps against Keras SGD and Adam under XLA (step.py), the
exact sampler against sampling with `tfp.distributions.Multinomial` directly
(and torch's, the paper's, when torch is installed), peak memory of a step
against SGD's in fresh processes, and `model.fit` step times.
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_zim
from keras_zim import models, sampling

sys.path.insert(0, os.path.dirname(__file__))
import step  # noqa: E402  (benchmarks/step.py, beside this file)

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_ms(function, rounds):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def sampler_against_tfp(size, rounds, rate=0.01):
    """ms per draw of x ~ ZIMultinomial(n = d, r, q): keras_zim vs TFP (and torch)."""
    g = tf.constant(np.random.default_rng(0).normal(size=size).astype("float32"))
    seed = tf.constant([1, 2])
    chunk = sampling.chunk_size(size, rate)
    ours = lambda: sampling.grid_moves([g], tf.constant(rate), seed, None, 1.0, 1.0, chunk)[0].numpy()  # noqa: E731
    probs = tf.concat([[1.0 - rate], rate * (tf.abs(tf.cast(g, tf.float64)) + 1.0) / tf.reduce_sum(tf.abs(tf.cast(g, tf.float64)) + 1.0)], 0)
    naive = tf.function(
        lambda: tfp.distributions.Multinomial(float(size), probs=probs).sample(seed=seed), jit_compile=True
    )
    result = {"keras_zim": _median_ms(ours, rounds), "tfp Multinomial": _median_ms(lambda: naive().numpy(), max(3, rounds // 10))}
    try:
        import torch

        q = torch.tensor(probs.numpy())
        result["torch Multinomial"] = _median_ms(
            lambda: torch.distributions.Multinomial(total_count=size, probs=q).sample(), max(3, rounds // 10)
        )
    except ImportError:
        pass
    return result


def peak_memory_mb(size, optimizer):
    """Peak resident memory (MB) of 5 compiled steps in a fresh process, above its RSS before.

    Compiles first, then resets the peak (`/proc/self/clear_refs`, Linux) so
    that only the steps count.
    """
    code = (
        "import numpy as np, tensorflow as tf, keras, keras_zim, step\n"
        "def kb(field): return int([l for l in open('/proc/self/status') if l.startswith(field)][0].split()[1])\n"
        f"size = {size}\n"
        "g = [tf.constant(np.random.default_rng(0).normal(size=size).astype('float32'))]\n"
        "v = [keras.Variable(np.zeros(size, 'float32'))]\n"
        f"f = step._step_function({optimizer}, v, g)\n"
        "f().numpy()\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kb('VmRSS:')\n"
        "for _ in range(5): f().numpy()\n"
        "print((kb('VmHWM:') - before) / 1024)\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def fit_step_ms(name, input_shape, rounds, batches=20):
    """ms per `model.fit` step (batch 64, jit_compile=True): ZIM vs SGD."""
    rng = np.random.default_rng(0)
    x = rng.random((64 * batches,) + input_shape).astype("float32")
    y = rng.integers(0, 10, 64 * batches)
    fitters = {}
    for label, discrete, optimizer in (
        ("sgd", False, keras.optimizers.SGD(0.01)),
        ("zim", True, keras_zim.ZIM(seed=0)),
    ):
        model = models.build_model(name, input_shape, 10, discrete=discrete, seed=0)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=True)
        fitters[label] = lambda model=model: model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
        fitters[label]()
    times = {label: [] for label in fitters}
    for _ in range(rounds):
        for label, fit in fitters.items():
            start = time.perf_counter()
            fit()
            times[label].append((time.perf_counter() - start) / batches)
    return {label: 1e3 * float(np.median(t)) for label, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; skip 1e7 memory")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "performance.md"))
    args = parser.parse_args(argv)
    rounds = 10 if args.quick else 40
    lines = [
        "# Performance of a ZIM step",
        "",
        f"Written by `python benchmarks/run.py{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"TFP {tfp.__version__}, keras_zim {keras_zim.__version__}. Load average at the start: "
        f"{os.getloadavg()[0]:.1f}. Medians of {rounds} interleaved rounds; ratios against the baseline "
        "measured in the same run. Only CPU was measured: GPU and TPU claims rest on XLA, unmeasured here.",
        "",
        "## `optimizer.apply` under XLA, r = 0.01, one variable of d parameters",
        "",
        "| d | optimizer | median ms | x SGD |",
        "| --- | --- | --- | --- |",
    ]
    for size in (10**5, 10**6, 10**7):
        medians = step.time_steps(size, rounds if size < 10**7 else max(5, rounds // 4))
        for name, seconds in medians.items():
            lines.append(f"| {size:.0e} | {name} | {seconds * 1e3:.3f} | {seconds / medians['sgd']:.2f} |")
        print(lines[-4:], flush=True)
    lines += ["", "## One exact draw at n = d, r = 0.01: keras_zim against sampling directly", ""]
    lines += ["| d | sampler | median ms | x keras_zim |", "| --- | --- | --- | --- |"]
    for size in (10**5, 10**6):
        result = sampler_against_tfp(size, rounds)
        for name, ms in result.items():
            lines.append(f"| {size:.0e} | {name} | {ms:.2f} | {ms / result['keras_zim']:.0f} |")
        print(lines[-3:], flush=True)
    if "torch Multinomial" not in result:
        lines.append("\ntorch is not installed here, so the paper's sampler was not timed in this run.")
    lines += ["", "## Peak memory of a step (fresh process, peak RSS above the compiled state)", ""]
    lines += ["| d | optimizer | MB | bytes per parameter |", "| --- | --- | --- | --- |"]
    for size in (10**6,) if args.quick else (10**6, 10**7):
        sgd = peak_memory_mb(size, "keras.optimizers.SGD(0.01)")
        zim = peak_memory_mb(size, "keras_zim.ZIM(0.01, seed=0)")
        for name, mb in (("sgd", sgd), ("zim n=d", zim)):
            lines.append(f"| {size:.0e} | {name} | {mb:.1f} | {mb * 2**20 / size:.1f} |")
        print(lines[-2:], flush=True)
    lines += ["", "## `model.fit` step, batch 64, jit_compile=True", ""]
    lines += ["| model | optimizer | ms per step | x SGD |", "| --- | --- | --- | --- |"]
    for name, shape in (("hidden", (28, 28, 1)), ("conv", (28, 28, 1))):
        result = fit_step_ms(name, shape, max(3, rounds // 5))
        for label, ms in result.items():
            lines.append(f"| {name} | {label} | {ms:.2f} | {ms / result['sgd']:.2f} |")
        print(lines[-2:], flush=True)
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()

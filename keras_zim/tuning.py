"""`keras-zim tune`: each optimizer's settings chosen on a validation split.

A practitioner's baseline: every candidate setting (SGD and Adam learning
rates, ZIM's rate `r` and smoothing `c`) is trained on the training set minus
a validation split carved from the training images, for a few seeds; the
candidate with the best mean final validation accuracy wins for its
optimizer (ties: the first in the grid); the winners are then trained on the
full training set and tested, as `keras-zim reproduce` does. The test set is
never seen while choosing. Writes `validation/<candidate>/` and `final/`
(each a `reproduce` output), `tune.json` and `tune.md`.
"""

import argparse
import json
import os

import numpy as np

__all__ = ["SGD_RATES", "ADAM_RATES", "ZIM_RATES", "ZIM_SMOOTHINGS", "add_options", "candidates", "choose", "tune"]

SGD_RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
ADAM_RATES = (1e-4, 3e-4, 1e-3, 3e-3)
ZIM_RATES = (0.03, 0.1, 0.3, 1.0)
ZIM_SMOOTHINGS = (0.01, 1.0)


def _floats(text):
    try:
        values = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 <= value < float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"must be a comma-separated list of numbers >= 0, got {text!r}")
    return values


def _joined(values):
    return ",".join(f"{value:g}" for value in values)


def add_options(parser):
    """The tuning grid's options, added to `parser` (the `tune` subcommand)."""
    from keras_zim.cli import _positive_int  # cli imports this module when it builds its parser

    add = parser.add_argument
    add("--sgd-rates", type=_floats, default=list(SGD_RATES), metavar="LIST",
        help=f"SGD learning rates to try; default: {_joined(SGD_RATES)}")
    add("--adam-rates", type=_floats, default=list(ADAM_RATES), metavar="LIST",
        help=f"Adam learning rates to try; default: {_joined(ADAM_RATES)}")
    add("--zim-rates", type=_floats, default=list(ZIM_RATES), metavar="LIST",
        help=f"ZIM rates r to try (each in [0, 1]); default: {_joined(ZIM_RATES)}")
    add("--zim-smoothings", type=_floats, default=list(ZIM_SMOOTHINGS), metavar="LIST",
        help=f"ZIM smoothings c to try, with every r; default: {_joined(ZIM_SMOOTHINGS)}")
    add("--tune-runs", type=_positive_int, default=2, metavar="N",
        help="seeds per candidate on the validation split; default: 2")
    parser.set_defaults(validation=800, optimizers=["zim", "sgd", "adam"])


def candidates(args):
    """`(optimizer, label, overrides)` for every candidate of `args`' grid."""
    found = []
    for name in args.optimizers:
        if name == "sgd":
            found += [(name, f"sgd-lr{rate:g}", {"sgd_rate": rate}) for rate in args.sgd_rates]
        elif name == "adam":
            found += [(name, f"adam-lr{rate:g}", {"adam_rate": rate}) for rate in args.adam_rates]
        else:
            found += [
                (name, f"{name}-r{rate:g}-c{smoothing:g}", {"learning_rate": rate, "smoothing": smoothing})
                for rate in args.zim_rates
                for smoothing in args.zim_smoothings
            ]
    return found


def choose(scores):
    """The best candidate per optimizer: highest mean, ties to the first.

    Args:
        scores: a list of dicts with `optimizer`, `label`, `overrides` and
            `accuracies` (final validation accuracy per seed), in grid order.

    Returns:
        A dict from optimizer name to its winning entry of `scores`.
    """
    best = {}
    for entry in scores:
        mean = float(np.mean(entry["accuracies"]))
        if entry["optimizer"] not in best or mean > float(np.mean(best[entry["optimizer"]]["accuracies"])):
            best[entry["optimizer"]] = entry
    return best


def _with(args, **overrides):
    values = dict(vars(args))
    values.update(overrides)
    return argparse.Namespace(**values)


def tune(args, argv):
    """Runs the tuning that `args` describes; returns the tune.json dict."""
    from keras_zim.cli import reproduce

    for rate in args.zim_rates:
        if rate > 1:
            raise ValueError(f"ZIM rates must be in [0, 1]. Received: --zim-rates {_joined(args.zim_rates)}")
    if not args.validation:
        raise ValueError("keras-zim tune needs a validation split: --validation N > 0")
    out = args.out or os.path.join("runs", "tune")
    os.makedirs(out, exist_ok=True)
    scores = []
    for name, label, overrides in candidates(args):
        results = reproduce(
            _with(args, optimizers=[name], runs=args.tune_runs, out=os.path.join(out, "validation", label),
                  **overrides),
            ["reproduce", f"[tune candidate {label}]"],
        )
        accuracies = [run["final_test_accuracy"] for run in results["runs"]]
        scores.append({"optimizer": name, "label": label, "overrides": overrides, "accuracies": accuracies,
                       "settings": results["optimizer_settings"][name], "data": results["data"]["message"]})
    best = choose(scores)
    chosen = {}
    for entry in best.values():
        chosen.update(entry["overrides"])
    final = reproduce(_with(args, validation=0, out=os.path.join(out, "final"), **chosen),
                      ["reproduce", "[tune final]"])
    record = {
        "command": "keras-zim " + " ".join(argv),
        "validation_images": args.validation,
        "tune_runs": args.tune_runs,
        "scores": scores,
        "chosen": {name: entry["label"] for name, entry in best.items()},
        "final_summary": os.path.join(out, "final", "summary.md"),
    }
    with open(os.path.join(out, "tune.json"), "w") as file:
        json.dump(record, file, indent=1)
        file.write("\n")
    _write_markdown(record, final, out)
    print(f"Chosen on the validation split: {', '.join(record['chosen'].values())}. "
          f"Wrote {out}/tune.md, tune.json, final/")
    return record


def _write_markdown(record, final, out):
    lines = ["# keras-zim tune", "", f"- Command: `{record['command']}`",
             f"- Validation: {record['scores'][0]['data']}" if record["scores"] else "",
             f"- {record['tune_runs']} seed(s) per candidate; the best mean final validation accuracy "
             "wins per optimizer (ties: the first in the grid).", "",
             "| optimizer | candidate | validation accuracy per seed | mean | chosen |",
             "| --- | --- | --- | --- | --- |"]
    for entry in record["scores"]:
        chosen = "yes" if record["chosen"][entry["optimizer"]] == entry["label"] else ""
        per_seed = ", ".join(f"{100 * a:.2f}%" for a in entry["accuracies"])
        lines.append(f"| {entry['optimizer']} | {entry['label']} | {per_seed} | "
                     f"{100 * np.mean(entry['accuracies']):.2f}% | {chosen} |")
    lines += ["", "Then on the full training set, tested:", ""]
    with open(os.path.join(out, "final", "summary.md")) as file:
        table = [line for line in file.read().splitlines() if line.startswith("|")]
    lines += table + [""]
    with open(os.path.join(out, "tune.md"), "w") as file:
        file.write("\n".join(lines))

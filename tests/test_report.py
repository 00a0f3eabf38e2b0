"""Tests of keras_zim.report: the statistics and files of `keras-zim reproduce`."""

import json

import numpy as np
import pytest

from keras_zim import report


def _results(synthetic=False):
    runs, evaluations = [], []
    finals = {"zim": [0.90, 0.92], "sgd": [0.93, 0.95]}
    for name, accuracies in finals.items():
        for seed, accuracy in enumerate(accuracies):
            for iteration, value in ((0, 0.1), (20, accuracy - 0.05), (40, accuracy)):
                evaluations.append({"optimizer": name, "seed": seed, "epoch": 1 + (iteration > 20),
                                    "iteration": iteration, "test_loss": 1.0 - value,
                                    "test_accuracy": value})
            runs.append({"optimizer": name, "seed": seed, "iterations": 40,
                         "final_test_loss": 1.0 - accuracy, "final_test_accuracy": accuracy,
                         "integral_at_start": name == "zim", "integral_at_end": name == "zim",
                         "max_abs_weight": 37.0 if name == "zim" else 0.25,
                         "min_weight": -37.0 if name == "zim" else -0.25,
                         "max_weight": 20.0 if name == "zim" else 0.1, "seconds": 1.0})
    return {
        "command": "keras-zim reproduce --runs 2",
        "created": "2026-01-01T00:00:00+00:00",
        "config": {"model": "hidden", "batch_size": 64, "epochs": 2, "eval_every": 20, "runs": 2,
                   "optimizers": ["zim", "sgd"]},
        "optimizer_settings": {"zim": "ZIM r=0.05", "sgd": "SGD lr=0.01"},
        "machine": {"description": "2-core x86_64 CPU, no GPU, Linux"},
        "data": {"dataset": "mnist", "synthetic": synthetic, "train_images": 4000,
                 "message": "Data: MNIST: test data."},
        "parameters": 101770,
        "seconds": 4.0,
        "runs": runs,
        "evaluations": evaluations,
    }


def test_summarize():
    summary = report.summarize(_results())
    assert summary["zim"]["runs"] == 2
    assert summary["zim"]["mean"] == pytest.approx(0.91)
    assert summary["zim"]["std"] == pytest.approx(np.std([0.90, 0.92], ddof=1))
    assert summary["zim"]["gap_to_sgd"] == pytest.approx(-0.03)
    assert summary["sgd"]["gap_to_sgd"] == 0.0
    # Weights in [-37, 20] need 7 signed bits: -64 <= -37 and 20 <= 63.
    assert summary["zim"]["integral"] and summary["zim"]["integer_bits"] == 7
    assert not summary["sgd"]["integral"] and summary["sgd"]["integer_bits"] is None


def test_no_gap_without_sgd():
    results = _results()
    results["runs"] = [run for run in results["runs"] if run["optimizer"] == "zim"]
    assert report.summarize(results)["zim"]["gap_to_sgd"] is None


@pytest.mark.parametrize("synthetic", [False, True])
def test_files(tmp_path, synthetic):
    results = _results(synthetic)
    assert json.loads(open(report.write_results(results, tmp_path)).read()) == results
    with open(report.write_curves(results, tmp_path), "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = open(report.write_summary(results, tmp_path)).read()
    assert "| zim | ZIM r=0.05 | 2 | 91.00% +- 1.41% | 90.00% - 92.00% | -3.00 points |" in summary
    assert "yes (start and end of every run) | 37 (range -37 to 20) | 7 bits signed (fits int8) |" in summary
    assert "| sgd | SGD lr=0.01 | 2 | 94.00% +- 1.41% |" in summary
    assert ("SYNTHETIC DATA" in summary) == synthetic


def test_summary_says_which_start_and_which_held_out_set(tmp_path):
    results = _results()
    results["config"].update(init="keras", integer_init="paper")
    results["data"]["validation"] = 800
    summary = open(report.write_summary(results, tmp_path)).read()
    assert ("- Start: ZIM from integer kernels by the paper's rule for every kernel (one multinomial of "
            "round(size ** (1/ndim)) trials over PyTorch's start), zero biases; SGD/Adam from Keras's "
            "default start (Glorot uniform kernels, zero biases).") in summary
    assert "| final validation accuracy, mean +- std |" in summary


def test_write_figure_draws_one_curve_per_series(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", spy)
    results = _results()
    path = report.write_figure([(results, "zim", "paper ZIM"), (results, "sgd", "SGD"), (results, "adam", "none")],
                               str(tmp_path / "figure.png"), "title")
    with open(path, "rb") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    assert labels == ["paper ZIM (2 runs)", "SGD (2 runs)"]  # adam has no runs: no curve

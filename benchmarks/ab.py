"""A/B of the working tree's ZIM against a commit's, both in one process: steps interleaved, weights compared.

Steps of separate processes can differ by more than a change does
(docs/sampler.md), so each case here times Adam, `ZIM(scope=...)` as checked
out and the same optimizer from `BASE` side by side, in rounds. `BASE`'s `keras_zim` is
extracted with `git archive` and imported under another name. After the
timed rounds it prints whether both versions left bit-identical weights
(same seed, same gradients, same number of steps).

    python benchmarks/ab.py 86859a6 --models transformer resnet50 --scopes global variable
"""

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import keras  # noqa: E402

import keras_zim  # noqa: E402
from real_models import fixed_gradients, interleaved, shapes_of, step_function  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


def import_base(commit, into):
    """`keras_zim` of `commit`, imported as the package `keras_zim_base` from the folder `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "keras_zim"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    package = pathlib.Path(into) / "keras_zim_base"
    (pathlib.Path(into) / "keras_zim").rename(package)
    for source in package.rglob("*.py"):
        source.write_text(source.read_text().replace("keras_zim", "keras_zim_base"))
    sys.path.insert(0, into)
    import keras_zim_base

    return keras_zim_base


def compare(shapes, scope, base, rounds):
    """Median ms of Adam, ZIM and the base ZIM, and whether their weights ended identical."""
    gradients = fixed_gradients(shapes)
    steps, weights = {}, {}
    for name, make in (("adam", keras.optimizers.Adam), ("zim", lambda: keras_zim.ZIM(scope=scope, seed=0)),
                       ("base", lambda: base.ZIM(scope=scope, seed=0))):
        weights[name] = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
        steps[name] = step_function(make(), weights[name], gradients)
        steps[name]().numpy()
    seconds = interleaved(steps, rounds)
    same = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(weights["zim"], weights["base"]))
    return {name: 1e3 * s for name, s in seconds.items()}, same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare against")
    parser.add_argument("--models", nargs="+", default=["transformer", "resnet50"])
    parser.add_argument("--scopes", nargs="+", default=["global", "variable"], choices=("global", "variable"))
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        base = import_base(args.base, folder)
        print(f"| case | scope | Adam ms | ZIM ms (x Adam) | {args.base} ms (x Adam) | ZIM / {args.base} | same weights |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for model in args.models:
            for scope in args.scopes:
                ms, same = compare(shapes_of(model), scope, base, args.rounds)
                print(f"| {model} | {scope} | {ms['adam']:.2f} | {ms['zim']:.2f} ({ms['zim'] / ms['adam']:.2f}x) | "
                      f"{ms['base']:.2f} ({ms['base'] / ms['adam']:.2f}x) | {ms['zim'] / ms['base']:.3f} | {same} |",
                      flush=True)


if __name__ == "__main__":
    main()

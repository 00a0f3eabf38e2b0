"""Shipping a ZIM-trained model: integer weight files and exact SavedModels.

ZIM keeps every trainable weight an exact multiple of its grid `unit`, so the
weights are integers in disguise. `save_integer_weights` stores each one as
the narrowest integer dtype that holds it (a model whose weights stay within
[-128, 127] units ships at a quarter of its float32 size) and
`load_integer_weights` restores the identical model. `integer_report` says
which width each weight needs without writing anything. `export_saved_model`
writes a SavedModel for TF Serving atomically: it is checked (exact grid
weights, and `serve(sample)` equal to the model's own output) before it
appears at its path, and a failure leaves nothing behind. `export_litert`
writes a LiteRT (TFLite) flatbuffer whose kernels are int8 or int4 tensors
with scale `unit`, checked in the LiteRT interpreter before it is renamed
into place.

#### File format

`save_integer_weights` writes one `.npz` file (NumPy, no pickles): an array
`w<i>` per model weight, in `model.weights` order, and `__meta__`, a JSON
string: `{"format": "keras_zim.integer_weights", "version": 1, "unit": ...,
"weights": [{"path", "shape", "dtype", "stored", "grid"}, ...]}`. A weight
with `"grid": true` is stored as integers `k` and restored as `k * unit` in
its variable dtype; other weights (off-grid non-trainable weights, such as
BatchNorm's moving statistics) are stored as they are (bfloat16 as float32,
which holds it exactly).
"""

import collections
import itertools
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_zim import constraints
from keras_zim import grid
from keras_zim import litert
from keras_zim.constraints import signed_bits  # re-exported: it lived here first

__all__ = [
    "IntegerWidth",
    "LiteRTExport",
    "export_litert",
    "export_saved_model",
    "integer_report",
    "load_integer_weights",
    "save_integer_weights",
    "signed_bits",
]

FORMAT = "keras_zim.integer_weights"
VERSION = 1
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64")

IntegerWidth = collections.namedtuple(
    "IntegerWidth",
    ["path", "shape", "dtype", "grid", "low", "high", "bits", "stored", "range", "at_bound"],
    defaults=(None, None),
)
IntegerWidth.__doc__ = """One weight of `integer_report`.

Fields: `path` (the variable's path), `shape`, `dtype` (the variable's
dtype), `grid` (True if every entry is a finite multiple of `unit`), `low`
and `high` (the smallest and largest entry in units, ints; None off the
grid), `bits` (the signed two's-complement width that holds [low, high]; None
off the grid), `stored` (the dtype written by `save_integer_weights`),
`range` (the `(low, high)` of the variable's
`keras_zim.constraints.IntegerRange` in units, or None without one) and
`at_bound` (the fraction of entries at either end of `range`; None without
one).
"""


def _constraint_range(variable, unit):
    """The variable's IntegerRange as (low, high) in units of `unit` (floats if not whole), or None."""
    constraint = getattr(variable, "constraint", None)
    if not isinstance(constraint, constraints.IntegerRange):
        return None
    bounds = [b * constraint.unit / unit for b in (constraint.low, constraint.high)]
    return tuple(int(b) if b == int(b) else b for b in bounds)


def _at_bound(units, bounds):
    if bounds is None:
        return None
    return float(np.mean((units <= bounds[0]) | (units >= bounds[1]))) if units.size else 0.0


def _check_model(model, name="model"):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Argument `{name}` must be a keras.Model. Received: {name}={model!r}")
    if not model.built:
        raise ValueError(
            f"Argument `{name}` must be built (call it on data, or give it an Input) "
            "so that its weights exist."
        )


def _default_unit(model):
    optimizer = getattr(model, "optimizer", None)
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return float(getattr(optimizer, "unit", 1.0))


def _check_unit(unit, model):
    if unit is None:
        return _default_unit(model)
    if not grid.is_power_of_two(unit):
        raise ValueError(
            "Argument `unit` must be a positive power of two (the grid step, as in "
            f"keras_zim.ZIM) or None for the model's optimizer's unit. Received: unit={unit!r}"
        )
    return float(unit)


def _check_npz_path(filepath):
    if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(filepath).endswith(".npz"):
        raise ValueError(f"Argument `filepath` must be a path ending in '.npz'. Received: filepath={filepath!r}")
    return os.fspath(filepath)


def _on_grid(values, unit):
    """(whether `values` are finite multiples of `unit` that fit int64, values / unit)."""
    units = np.asarray(values, np.float64) / unit
    grid = bool(np.all(np.isfinite(units)) and np.all(units == np.round(units)))
    return grid and not (units.size and np.abs(units).max() > 2.0**62), units


def _is_float(dtype):
    return dtype.startswith(("float", "bfloat"))


def _weight_record(variable, unit):
    """The report line of one variable, and the array to store."""
    dtype = keras.backend.standardize_dtype(variable.dtype)
    values = np.asarray(keras.ops.convert_to_numpy(variable))
    shape = tuple(int(s) for s in values.shape)
    if not _is_float(dtype):
        return IntegerWidth(variable.path, shape, dtype, False, None, None, None, dtype), values
    grid, units = _on_grid(values, unit)
    if not grid:
        stored = "float32" if dtype == "bfloat16" else dtype
        bounds = _constraint_range(variable, unit)
        at_bound = _at_bound(np.asarray(values, np.float64) / unit, bounds)
        record = IntegerWidth(variable.path, shape, dtype, False, None, None, None, stored, bounds, at_bound)
        return record, values.astype(stored)
    low = int(units.min()) if units.size else 0
    high = int(units.max()) if units.size else 0
    bits = signed_bits(low, high)
    stored = next(d for d in _INTEGER_DTYPES if np.iinfo(d).min <= low and high <= np.iinfo(d).max)
    bounds = _constraint_range(variable, unit)
    record = IntegerWidth(variable.path, shape, dtype, True, low, high, bits, stored, bounds, _at_bound(units, bounds))
    return record, units.astype(stored)


def integer_report(model, unit=None):
    """The integer width each weight of `model` needs, without writing anything.

    Args:
        model: a built `keras.Model`.
        unit: the grid step, a positive power of two, or None for the unit of
            the model's ZIM optimizer (1.0 without one). Defaults to `None`.

    Returns:
        A list of `IntegerWidth`, one per `model.weights` entry, in order: its
        width, and for a weight with a `keras_zim.constraints.IntegerRange`
        the range and the fraction of its entries at a bound.

    Raises:
        ValueError: if `model` is not a built Keras model or `unit` is invalid.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    >>> [(w.path, w.stored, w.bits) for w in integer_report(model)]
    [('sequential/dense/kernel', 'int8', 2), ('sequential/dense/bias', 'int8', 1)]
    """
    _check_model(model)
    unit = _check_unit(unit, model)
    return [_weight_record(v, unit)[0] for v in model.weights]


def save_integer_weights(model, filepath, unit=None):
    """Writes `model`'s weights as integers of the narrowest dtype, atomically.

    Every trainable weight must be on the grid (a finite multiple of `unit`),
    as ZIM keeps it. The file is written beside `filepath` and renamed into
    place, so a failure never leaves a partial file at `filepath`.

    Args:
        model: a built `keras.Model`.
        filepath: path ending in `.npz`; an existing file is replaced.
        unit: the grid step, or None for the model's ZIM optimizer's unit
            (1.0 without one). Defaults to `None`.

    Returns:
        The `integer_report` of what was written.

    Raises:
        ValueError: if an argument is invalid or a trainable weight is off
            the grid.

    Example:

    >>> import os, tempfile
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    >>> path = os.path.join(tempfile.mkdtemp(), "w.npz")
    >>> [w.stored for w in save_integer_weights(model, path)]
    ['int8', 'int8']
    >>> load_integer_weights(model, path)
    """
    _check_model(model)
    filepath = _check_npz_path(filepath)
    unit = _check_unit(unit, model)
    trainable = {id(v) for v in model.trainable_weights}
    report, arrays = [], {}
    for index, variable in enumerate(model.weights):
        record, array = _weight_record(variable, unit)
        if id(variable) in trainable and not record.grid and _is_float(record.dtype):
            raise ValueError(
                f"Trainable weight '{variable.path}' is not on the grid of unit={unit}: "
                "integer export needs every trainable weight to be a finite multiple of "
                "`unit`. Train it with keras_zim.ZIM from grid initial values (e.g. "
                "keras_zim.initializers.Discrete and zero biases), or pass its grid `unit`."
            )
        report.append(record)
        arrays[f"w{index}"] = array
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "unit": unit,
        "weights": [
            {"path": r.path, "shape": list(r.shape), "dtype": r.dtype, "stored": r.stored, "grid": r.grid}
            for r in report
        ],
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    directory = os.path.dirname(os.path.abspath(filepath))
    if not os.path.isdir(directory):
        raise ValueError(f"Argument `filepath` must be in an existing directory. Received: filepath={filepath!r}")
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, filepath)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return report


def _read_integer_file(filepath):
    if not os.path.isfile(filepath):
        raise ValueError(f"Argument `filepath` must be an existing file. Received: filepath={filepath!r}")
    try:
        with np.load(filepath, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            arrays = {key: data[key] for key in data.files if key != "__meta__"}
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{filepath!r} is not a keras_zim integer weights file: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{filepath!r} is not a keras_zim integer weights file (no '{FORMAT}' header).")
    if meta.get("version") != VERSION:
        raise ValueError(f"{filepath!r} has format version {meta.get('version')!r}; this keras_zim reads {VERSION}.")
    return meta, arrays


def load_integer_weights(model, filepath):
    """Restores weights written by `save_integer_weights` into `model`, exactly.

    Everything is checked before anything is assigned: on any error the
    model is left unchanged.

    Args:
        model: a built `keras.Model` with the same weights (paths, shapes) as
            the saved one.
        filepath: path of a `.npz` file written by `save_integer_weights`.

    Raises:
        ValueError: if the file is missing or not such a file, or its weights
            do not match the model's.
    """
    _check_model(model)
    filepath = _check_npz_path(filepath)
    meta, arrays = _read_integer_file(filepath)
    entries = meta["weights"]
    variables = model.weights
    if len(entries) != len(variables):
        raise ValueError(
            f"{filepath!r} holds {len(entries)} weights but the model has {len(variables)}: "
            "load into a model of the same architecture."
        )
    values = []
    for index, (entry, variable) in enumerate(zip(entries, variables)):
        shape = tuple(int(s) for s in variable.shape)
        array = arrays.get(f"w{index}")
        if array is None or tuple(entry["shape"]) != shape or array.shape != shape:
            raise ValueError(
                f"Weight {index} of {filepath!r} ('{entry['path']}', shape {tuple(entry['shape'])}) "
                f"does not match the model's '{variable.path}' (shape {shape})."
            )
        if array.dtype.name != entry["stored"]:
            raise ValueError(f"Weight {index} of {filepath!r} is stored as {array.dtype.name}, not {entry['stored']}.")
        if entry["grid"]:
            array = array.astype(np.float64) * float(meta["unit"])
        values.append(array)
    for variable, value in zip(variables, values):
        variable.assign(keras.ops.cast(value, variable.dtype))


def _check_export_path(path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"Argument `path` must be a directory path. Received: path={path!r}")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path):
        raise ValueError(f"Argument `path` must not exist yet (nothing is overwritten). Received: path={path!r}")
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"The parent directory of `path` must exist. Received: path={path!r}")
    return path


def _check_export(model, directory, unit, sample):
    loaded = tf.saved_model.load(directory)
    exported = {v.name.rsplit(":", 1)[0]: v for v in loaded.variables}
    for variable in model.trainable_weights:
        copy = exported.get(variable.path)
        if copy is None:
            raise ValueError(f"The SavedModel has no variable for '{variable.path}'.")
        value = copy.numpy()
        if not np.array_equal(value, keras.ops.convert_to_numpy(variable)):
            raise ValueError(f"The SavedModel's '{variable.path}' differs from the model's.")
        if not _on_grid(value, unit)[0]:
            raise ValueError(f"The SavedModel's '{variable.path}' is off the grid of unit={unit}.")
    if sample is not None:
        served = tf.nest.map_structure(np.asarray, loaded.serve(sample))
        expected = tf.nest.map_structure(np.asarray, model(sample, training=False))
        for got, want in zip(tf.nest.flatten(served), tf.nest.flatten(expected)):
            if got.shape != want.shape or not np.array_equal(got, want):
                raise ValueError("The SavedModel's `serve(sample)` differs from the model's output on `sample`.")


def export_saved_model(model, path, unit=None, sample=None, **kwargs):
    """`model.export(path)`, checked and atomic: a SavedModel for TF Serving.

    Checks that every trainable weight is on the grid, exports into a
    temporary directory beside `path`, reloads it with `tf.saved_model.load`,
    checks that its variables equal the model's (exact grid values) and, with
    `sample`, that `serve(sample)` equals `model(sample)` bit for bit; only then
    renames it to `path`. On any failure the temporary directory is removed
    and `path` does not exist.

    Args:
        model: a built `keras.Model`.
        path: directory to create; must not exist.
        unit: the grid step, or None for the model's ZIM optimizer's unit.
            Defaults to `None`.
        sample: optional input batch to check the exported `serve` against.
            Defaults to `None`.
        **kwargs: passed to `model.export` (e.g. `input_signature`).

    Returns:
        The absolute path of the SavedModel.

    Raises:
        ValueError: on invalid arguments, off-grid weights, or a failed check.
    """
    _check_model(model)
    unit = _check_unit(unit, model)
    path = _check_export_path(path)
    for variable in model.trainable_weights:
        if not _on_grid(keras.ops.convert_to_numpy(variable), unit)[0]:
            raise ValueError(
                f"Trainable weight '{variable.path}' is not on the grid of unit={unit}; "
                "use `model.export` for a model that is not trained on the grid."
            )
    temporary = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".tmp-export-")
    try:
        model.export(temporary, format="tf_saved_model", verbose=False, **kwargs)
        _check_export(model, temporary, unit, sample)
        os.rename(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


# --- LiteRT ----------------------------------------------------------------

LiteRTExport = collections.namedtuple("LiteRTExport", ["path", "bytes", "float32_bytes", "tensors"])
LiteRTExport.__doc__ = """What `export_litert` wrote.

Fields: `path` (absolute path of the `.tflite` file), `bytes` (its size),
`float32_bytes` (the size of the float32 LiteRT file of the same model,
converted the same way without integer weights) and `tensors` (a list of
`(variable path, dtype, shape)` per integer kernel: `"int8"` or `"int4"`, and
the kernel's shape in the flatbuffer, which LiteRT may transpose: a Dense
kernel `(in, out)` is stored `(out, in)`).
"""

_LITERT_WIDTHS = (4, 8)


def _check_litert_path(path):
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).endswith(".tflite"):
        raise ValueError(f"Argument `path` must be a path ending in '.tflite'. Received: path={path!r}")
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"The parent directory of `path` must exist. Received: path={path!r}")
    return path


def _litert_kernels(model, unit):
    """{variable id: (variable, integer values in units, width)} of the kernels; checks every trainable weight."""
    kernels = {}
    for variable in model.trainable_weights:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        values = np.asarray(keras.ops.convert_to_numpy(variable), np.float64)
        grid, units = _on_grid(values, unit)
        if not _is_float(dtype) or not grid:
            raise ValueError(
                f"Trainable weight '{variable.path}' is not on the grid of unit={unit}: export_litert stores "
                "the exact integers of a model trained with keras_zim.ZIM, or pass its grid `unit`."
            )
        bounds = _constraint_range(variable, unit)
        if bounds is not None and units.size and (units.min() < bounds[0] or units.max() > bounds[1]):
            raise ValueError(
                f"Trainable weight '{variable.path}' is outside the range of its constraint "
                f"{type(variable.constraint).__name__}: values in [{units.min():g}, {units.max():g}] units "
                f"against [{bounds[0]}, {bounds[1]}]."
            )
        if len(variable.shape) < 2:
            continue  # biases and normalisation scales stay float32 (exact: they are on the grid)
        span = bounds if bounds is not None and all(float(b).is_integer() for b in bounds) else (units.min(), units.max())
        bits = signed_bits(int(min(span[0], 0)), int(max(span[1], 0)))
        width = next((w for w in _LITERT_WIDTHS if bits <= w), None)
        if width is None:
            raise ValueError(
                f"Trainable weight '{variable.path}' needs {bits} signed bits (values in "
                f"[{units.min():g}, {units.max():g}] units); export_litert stores kernels as int8 or int4. "
                "Bound it with keras_zim.constraints.IntegerRange(-127, 127)."
            )
        kernels[id(variable)] = (variable, units, width)
    return kernels


def _litert_sample(model, sample):
    if sample is not None:
        arrays = [np.asarray(s) for s in (sample if isinstance(sample, (list, tuple)) else [sample])]
        if len(arrays) != len(model.inputs):
            raise ValueError(
                f"Argument `sample` must be one input batch per model input ({len(model.inputs)}). "
                f"Received: {len(arrays)} arrays"
            )
        return arrays
    rng = np.random.default_rng(0)
    return [rng.random([8] + list(t.shape)[1:]).astype(keras.backend.standardize_dtype(t.dtype)) for t in model.inputs]


def _match_kernels(tensors, kernels, unit):
    """Pairs each kernel with the flatbuffer tensor holding its integers (possibly transposed)."""
    found, free = [], list(tensors)
    for variable, units, width in kernels.values():
        match = None
        for tensor in free:
            if tensor.values.size != units.size:
                continue
            for order in itertools.permutations(range(units.ndim)):
                if tensor.shape == tuple(units.shape[i] for i in order) and np.array_equal(
                    tensor.values, np.transpose(units, order)
                ):
                    match = tensor
                    break
            if match is not None:
                break
        if match is None:
            raise ValueError(f"The LiteRT model has no integer tensor equal to '{variable.path}' in units of {unit}.")
        if match.dtype != f"int{width}" or match.scale != unit or match.zero_point != 0:
            raise ValueError(
                f"The LiteRT tensor of '{variable.path}' is {match.dtype} with scale {match.scale} and zero point "
                f"{match.zero_point}; expected int{width}, scale {unit}, zero point 0."
            )
        free.remove(match)
        found.append((variable.path, match.dtype, match.shape))
    if free:
        raise ValueError(f"The LiteRT model has integer tensors that are no kernel of the model: {[t.name for t in free]}")
    return found


def _check_litert(model, flatbuffer, kernels, unit, sample):
    """Runs `flatbuffer` in the LiteRT interpreter on `sample`: outputs must match the model's."""
    tensors = _match_kernels(litert.integer_tensors(flatbuffer), kernels, unit)
    got = litert.run(flatbuffer, sample)
    want = [np.asarray(keras.ops.convert_to_numpy(t)) for t in tf.nest.flatten(model(sample if len(sample) > 1 else sample[0], training=False))]
    if len(got) != len(want):
        raise ValueError(f"The LiteRT model has {len(got)} outputs; the model has {len(want)}.")
    for g, w in zip(sorted(got, key=np.shape), sorted(want, key=np.shape)):
        # float32 with another summation order: equal up to rounding, relative to the output's scale.
        tolerance = 1e-4 * max(1.0, float(np.abs(w).max()) if w.size else 1.0)
        if g.shape != w.shape or not np.all(np.abs(g - w) <= tolerance):
            raise ValueError("The LiteRT model's outputs on `sample` differ from the model's beyond float32 rounding.")
        if w.ndim >= 2 and w.shape[-1] > 1:
            # Rows whose two largest outputs tie within `tolerance` have no argmax that rounding respects.
            top_two = np.sort(w, axis=-1)[..., -2:]
            decided = (top_two[..., 1] - top_two[..., 0]) > tolerance
            if not np.array_equal(g.argmax(-1)[decided], w.argmax(-1)[decided]):
                raise ValueError("The LiteRT model's argmax on `sample` differs from the model's.")
    return tensors


def export_litert(model, path, unit=None, sample=None):
    """Writes a LiteRT (TFLite) model whose kernels are the exact integers: int8 or int4, scale `unit`.

    Every trainable weight must be on the grid (a finite multiple of `unit`)
    and inside the range of its `keras_zim.constraints.IntegerRange`, if any.
    Each kernel (a trainable weight of two or more dimensions) is stored as an
    int4 tensor when its range (the constraint's, or else its values') fits
    [-8, 7] units and as int8 when it fits [-128, 127], with scale `unit` and
    zero point 0: the integers themselves, not re-quantised from floats.
    LiteRT dequantises them once and computes in float32, so the outputs are
    the model's up to float32 rounding. Biases, normalisation weights and
    other weights stay float32.

    The file is checked before it is renamed into place: loaded in the
    LiteRT interpreter (`tf.lite.Interpreter`, or `ai_edge_litert`'s where TF
    has none), its integer tensors read back must equal the kernels in units
    (with the expected type, scale and zero point), and its outputs on
    `sample` must equal `model(sample)` within `1e-4` of their largest
    magnitude, with the same argmax on every row whose two largest outputs
    differ by more than that (an exact tie has no argmax that rounding keeps). A failure leaves `path` as
    it was (absent, or the previous file).

    Args:
        model: a built `keras.Model` with defined inputs (`keras.Input`).
        path: the file to write, ending in `.tflite`; an existing file is
            replaced.
        unit: the grid step, a positive power of two, or None for the unit of
            the model's ZIM optimizer (1.0 without one). Defaults to `None`.
        sample: an input batch (or a list, one per input) for the check, or
            None for 8 rows uniform in [0, 1). Defaults to `None`.

    Returns:
        A `LiteRTExport`: the path, the file's size, the size of the float32
        LiteRT file of the same model, and the integer tensors.

    Raises:
        ValueError: on invalid arguments, a weight off the grid or outside
            its range, a kernel wider than int8, or a failed check.

    Example:

    >>> import os, tempfile
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_initializer="ones", name="d")], name="m")
    >>> result = export_litert(model, os.path.join(tempfile.mkdtemp(), "m.tflite"))
    >>> result.tensors
    [('m/d/kernel', 'int4', (3, 4))]
    """
    _check_model(model)
    unit = _check_unit(unit, model)
    path = _check_litert_path(path)
    if not getattr(model, "inputs", None):
        raise ValueError("Argument `model` must have defined inputs (build it from keras.Input) for export_litert.")
    kernels = _litert_kernels(model, unit)
    sample = _litert_sample(model, sample)
    float_bytes = len(litert.convert(model))
    widths = {key: width for key, (_, _, width) in kernels.items()}
    flatbuffer, _ = litert.sign_weights(litert.convert(model, widths, unit))
    tensors = _check_litert(model, flatbuffer, kernels, unit, sample)
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".tflite")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(flatbuffer)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return LiteRTExport(path, len(flatbuffer), float_bytes, tensors)

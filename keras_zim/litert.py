"""LiteRT (TFLite) flatbuffers: convert a model with integer kernels, read them back, run it.

`convert` writes a Keras model as a LiteRT flatbuffer in which chosen kernels
are fake-quantised on the grid of scale `unit`, which TensorFlow's converter
keeps as integer constants followed by DEQUANTIZE. A small reader of the TFLite flatbuffer schema (`tensorflow/lite/schema/schema.fbs`)
on the `flatbuffers` runtime, for what `keras_zim.export.export_litert` needs:
list the quantised constant tensors of a model with their integers, and turn the
unsigned tensors that TensorFlow's converter writes for a fake-quantised weight
(uint8 with zero point 128, uint4 with zero point 8) into the equivalent signed
ones (int8 or int4, zero point 0) in place: the same dequantised values, the
same bytes, with the sign bit flipped.
"""

import shutil
import struct
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from flatbuffers import encode
from flatbuffers import number_types
from flatbuffers import table

__all__ = ["IntegerTensor", "convert", "integer_tensors", "interpreter", "run", "sign_weights"]

# TensorType values of the schema.
_TYPES = {3: "uint8", 9: "int8", 17: "int4", 20: "uint4", 19: "int2"}
_SIGNED = {"uint8": (9, 128, 0x80), "uint4": (17, 8, 0x88)}  # new type, old zero point, XOR mask


class IntegerTensor:
    """One quantised constant tensor of a LiteRT model.

    Attributes:
        name: the tensor's name in the flatbuffer.
        dtype: `"int8"`, `"int4"`, `"uint8"`, `"uint4"` or `"int2"`.
        shape: a tuple of ints.
        scale: the per-tensor scale (a float), or None if per channel.
        zero_point: the per-tensor zero point (an int), or None if per channel.
        values: the stored integers minus the zero point, an int64 array of `shape`:
            `scale * values` are the dequantised values.
    """

    def __init__(self, name, dtype, shape, scale, zero_point, values):
        self.name, self.dtype, self.shape = name, dtype, shape
        self.scale, self.zero_point, self.values = scale, zero_point, values

    def __repr__(self):
        return f"IntegerTensor({self.name!r}, {self.dtype}, shape={self.shape}, scale={self.scale}, zero_point={self.zero_point})"


def _slot(tab, slot):
    return tab.Offset(4 + 2 * slot)


def _tables(tab, slot):
    offset = _slot(tab, slot)
    if not offset:
        return []
    start = tab.Vector(offset)
    return [table.Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(offset))]


def _array(tab, slot, dtype):
    """(a NumPy view of a scalar vector field, its absolute start) or (None, None)."""
    offset = _slot(tab, slot)
    if not offset:
        return None, None
    start = tab.Vector(offset)
    return np.frombuffer(tab.Bytes, dtype, tab.VectorLen(offset), start), start


def _scalar(tab, slot, flags, default):
    offset = _slot(tab, slot)
    return tab.Get(flags, tab.Pos + offset) if offset else default


def _walk(flatbuffer):
    """Yields (tensor table, type code, name, shape, quantization table, buffer table)."""
    root = table.Table(flatbuffer, encode.Get(number_types.UOffsetTFlags.packer_type, flatbuffer, 0))
    buffers = _tables(root, 4)
    for subgraph in _tables(root, 2):
        for tensor in _tables(subgraph, 0):
            code = _scalar(tensor, 1, number_types.Int8Flags, 0)
            name_offset = _slot(tensor, 3)
            name = tensor.String(tensor.Pos + name_offset).decode() if name_offset else ""
            shape, _ = _array(tensor, 0, "<i4")
            quantization = _slot(tensor, 4)
            quantization = table.Table(flatbuffer, tensor.Indirect(tensor.Pos + quantization)) if quantization else None
            buffer = _scalar(tensor, 2, number_types.Uint32Flags, 0)
            yield tensor, code, name, tuple(int(s) for s in ([] if shape is None else shape)), quantization, buffers[buffer]


def _unpack(data, dtype, size):
    if dtype in ("int8", "uint8"):
        return data.astype(np.int64)[:size] if dtype == "uint8" else data.view(np.int8).astype(np.int64)[:size]
    bits = 4 if dtype in ("int4", "uint4") else 2
    per_byte = 8 // bits
    fields = np.stack([(data >> (bits * k)) & (2**bits - 1) for k in range(per_byte)], axis=1).reshape(-1)[:size]
    fields = fields.astype(np.int64)
    if dtype.startswith("int"):  # two's complement in `bits` bits
        fields = np.where(fields >= 2 ** (bits - 1), fields - 2**bits, fields)
    return fields


def integer_tensors(flatbuffer):
    """The quantised constant tensors of a LiteRT flatbuffer, with their integers.

    Args:
        flatbuffer: the model's bytes (the content of a `.tflite` file).

    Returns:
        A list of `IntegerTensor`, in the order of the model's tensors: every
        constant tensor of type int8, uint8, int4, uint4 or int2. Sub-byte
        types are packed low bits first, as LiteRT stores them.
    """
    found = []
    for _, code, name, shape, quantization, buffer in _walk(bytes(flatbuffer)):
        dtype = _TYPES.get(code)
        data, _ = _array(buffer, 0, "u1")
        if dtype is None or data is None or not data.size:
            continue
        scale = zero_point = None
        if quantization is not None:
            scales, _ = _array(quantization, 2, "<f4")
            zero_points, _ = _array(quantization, 3, "<i8")
            if scales is not None and scales.size == 1:
                scale = float(scales[0])
            if zero_points is not None and zero_points.size == 1:
                zero_point = int(zero_points[0])
        values = _unpack(data, dtype, int(np.prod(shape)))
        if zero_point is not None:
            values = values - zero_point
        found.append(IntegerTensor(name, dtype, shape, scale, zero_point, values.reshape(shape)))
    return found


def sign_weights(flatbuffer):
    """Turns uint8 (zero point 128) and uint4 (zero point 8) constants into int8 and int4, zero point 0.

    `q - 128` in uint8 is `q XOR 0x80` read as int8 (two's complement), and the
    same per nibble for uint4: the dequantised values `scale * (q - z)` are
    unchanged. The flatbuffer's layout is unchanged too (only values move), so
    the edit is done in place.

    Args:
        flatbuffer: the model's bytes.

    Returns:
        `(bytes, names)`: the edited model and the names of the edited tensors.

    Raises:
        ValueError: if an unsigned constant has a zero point other than 128
            (uint8) or 8 (uint4), or is quantised per channel.
    """
    edited = bytearray(flatbuffer)
    names, done = [], set()
    for tensor, code, name, _, quantization, buffer in _walk(edited):
        dtype = _TYPES.get(code)
        if dtype not in _SIGNED:
            continue
        signed, zero, mask = _SIGNED[dtype]
        zero_points, start = (None, None) if quantization is None else _array(quantization, 3, "<i8")
        if zero_points is None or zero_points.size != 1 or int(zero_points[0]) != zero:
            raise ValueError(
                f"LiteRT tensor '{name}' is {dtype} with zero points {None if zero_points is None else zero_points.tolist()}; "
                f"expected one zero point {zero}."
            )
        struct.pack_into("<q", edited, start, 0)
        struct.pack_into("<b", edited, tensor.Pos + _slot(tensor, 1), signed)
        data, data_start = _array(buffer, 0, "u1")
        if data is not None and data_start not in done:
            done.add(data_start)
            edited[data_start : data_start + data.size] = (data ^ mask).tobytes()
        names.append(name)
    return bytes(edited), names


def interpreter(model_content):
    """A LiteRT interpreter of `model_content`: TensorFlow's, or `ai_edge_litert`'s where TF has none.

    Args:
        model_content: the model's bytes.

    Returns:
        An interpreter with `allocate_tensors`, `set_tensor`, `invoke`, ...
    """
    try:
        from tensorflow import lite

        make = lite.Interpreter
    except (ImportError, AttributeError):
        from ai_edge_litert import interpreter as litert_interpreter

        make = litert_interpreter.Interpreter
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        return make(model_content=model_content)


def convert(model, widths=None, unit=1.0):
    """Converts `model`, its current weights as constants, to a LiteRT flatbuffer.

    Every variable of `model` is read once and frozen. A kernel named in
    `widths` passes through `tf.quantization.fake_quant_with_min_max_args` on
    `[-2**(w-1), 2**(w-1) - 1]` units, whose scale is exactly `unit`; for
    values already on that grid it changes nothing, and the converter (with
    its strict QDQ mode) stores the weight as a uint8 (zero point 128) or uint4
    (zero point 8) constant followed by DEQUANTIZE, the ops running in float32.
    `sign_weights` then makes those constants int8 or int4 with zero point 0.

    Args:
        model: a built `keras.Model` with defined inputs.
        widths: a dict from `id(variable)` to 4 or 8, the kernels to store as
            integers, or None for none (a float32 flatbuffer). Defaults to
            `None`.
        unit: the grid step (a power of two). Defaults to `1.0`.

    Returns:
        The flatbuffer's bytes.
    """
    widths = widths or {}
    module = tf.Module()
    module.copies = [tf.Variable(keras.ops.convert_to_numpy(v), trainable=False) for v in model.variables]
    pairs = list(zip(model.variables, module.copies))
    specs = [tf.TensorSpec([None] + list(t.shape)[1:], t.dtype) for t in model.inputs]

    def value(variable, copy):
        width = widths.get(id(variable))
        if width is None:
            return tf.identity(copy)
        return tf.quantization.fake_quant_with_min_max_args(
            copy, min=-(2 ** (width - 1)) * unit, max=(2 ** (width - 1) - 1) * unit, num_bits=width, narrow_range=False
        )

    @tf.function(input_signature=specs, autograph=False)
    def serve(*args):
        with keras.StatelessScope(state_mapping=[(v, value(v, c)) for v, c in pairs]):
            return model(list(args) if len(args) > 1 else args[0], training=False)

    module.serve = serve
    directory = tempfile.mkdtemp(prefix="keras_zim_litert_")
    try:
        tf.saved_model.save(module, directory, signatures={"serving_default": serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(directory)
        # Keep each fake-quantised weight as the integer constant + DEQUANTIZE that it
        # annotates instead of folding it back to float32 (docs/bounded.md).
        converter._experimental_strict_qdq = bool(widths)
        return converter.convert()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(model_content, inputs):
    """Runs a LiteRT model once on a batch.

    Args:
        model_content: the model's bytes.
        inputs: a list of arrays, one per model input, in the interpreter's
            input order.

    Returns:
        The list of output arrays, in the interpreter's output order.

    Raises:
        ValueError: if the number of inputs does not match the model's.
    """
    runner = interpreter(model_content)
    details = runner.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"Argument `inputs` must hold {len(details)} arrays. Received: {len(inputs)}")
    for detail, array in zip(details, inputs):
        runner.resize_tensor_input(detail["index"], np.shape(array))
    runner.allocate_tensors()
    for detail, array in zip(details, inputs):
        runner.set_tensor(detail["index"], np.asarray(array).astype(detail["dtype"]))
    runner.invoke()
    return [runner.get_tensor(d["index"]) for d in runner.get_output_details()]

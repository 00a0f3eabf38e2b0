"""keras_zim.litert: the flatbuffer reader and the signed rewrite of converter output."""

import numpy as np
import pytest
import tensorflow as tf

from keras_zim import litert


def _fake_quantised_dense(bits, kernel):
    """A LiteRT model `x @ fake_quant(kernel)` converted with strict QDQ: a uint constant + DEQUANTIZE."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    variable = tf.Variable(kernel)

    @tf.function(input_signature=[tf.TensorSpec([None, kernel.shape[0]], tf.float32)])
    def serve(x):
        return tf.matmul(x, tf.quantization.fake_quant_with_min_max_args(variable, min=low, max=high, num_bits=bits))

    module = tf.Module()
    module.v, module.serve = variable, serve
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], module)
    converter._experimental_strict_qdq = True
    return converter.convert()


@pytest.mark.parametrize("bits, unsigned, signed, zero", [(8, "uint8", "int8", 128), (4, "uint4", "int4", 8)])
def test_sign_weights_keeps_the_values_and_makes_the_zero_point_zero(bits, unsigned, signed, zero):
    kernel = np.random.default_rng(0).integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (6, 5)).astype("float32")
    flatbuffer = _fake_quantised_dense(bits, kernel)
    (before,) = litert.integer_tensors(flatbuffer)
    if before.dtype != unsigned:
        pytest.skip(f"this converter writes {before.dtype}, not {unsigned}")
    assert before.zero_point == zero and before.scale == 1.0
    np.testing.assert_array_equal(before.values, kernel.T)  # value - zero point
    edited, names = litert.sign_weights(flatbuffer)
    assert names == [before.name] and len(edited) == len(flatbuffer)
    (after,) = litert.integer_tensors(edited)
    assert (after.dtype, after.zero_point, after.scale) == (signed, 0, 1.0)
    np.testing.assert_array_equal(after.values, kernel.T)
    x = np.random.default_rng(1).random((3, 6)).astype("float32")
    interpreter = litert.interpreter(edited)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), x @ kernel, rtol=1e-6)


def test_a_float_model_has_no_integer_tensors():
    variable = tf.Variable(np.ones((3, 2), "float32"))
    module = tf.Module()
    module.v = variable
    serve = tf.function(lambda x: tf.matmul(x, variable), input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], module).convert()
    assert litert.integer_tensors(flatbuffer) == []
    assert litert.sign_weights(flatbuffer) == (flatbuffer, [])


def test_the_interpreter_falls_back_to_ai_edge_litert_where_tensorflow_has_none(monkeypatch):
    litert_interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    kernel = np.arange(-3, 3, dtype="float32").reshape(3, 2)
    flatbuffer, _ = litert.sign_weights(_fake_quantised_dense(8, kernel))
    assert type(litert.interpreter(flatbuffer)) is tf.lite.Interpreter
    monkeypatch.delattr(tf.lite, "Interpreter")
    interpreter = litert.interpreter(flatbuffer)
    assert type(interpreter) is litert_interpreter.Interpreter
    x = np.ones((1, 3), "float32")
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), x @ kernel)

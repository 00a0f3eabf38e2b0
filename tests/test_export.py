"""keras_zim.export: exact SavedModels and integer weight files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zim
from keras_zim import constraints
from keras_zim import export


def _model(seed=0, dtype=None):
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, "relu", kernel_initializer=keras_zim.initializers.Discrete(seed=seed), dtype=dtype),
            keras.layers.Dense(3, kernel_initializer=keras_zim.initializers.Discrete(seed=seed + 1), dtype=dtype),
            keras.layers.LayerNormalization(center=False, scale=False),
        ]
    )


def _data(rows=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 8)).astype("float32")
    return x, (x[:, :3].argmax(1)).astype("int32")


@pytest.fixture(scope="module")
def trained():
    x, y = _data()
    model = _model()
    model.compile(
        optimizer=keras_zim.ZIM(learning_rate=0.3, seed=3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert keras_zim.is_integral(model) and max(np.abs(w).max() for w in model.get_weights()) > 1
    return model


def _same_weights(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


# --- SavedModel ----------------------------------------------------------


def test_saved_model_serves_exactly_what_predict_returns(trained, tmp_path):
    x, _ = _data()
    path = export.export_saved_model(trained, tmp_path / "zim", sample=x)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.listdir(tmp_path) == ["zim"]  # no temporary directory left
    loaded = tf.saved_model.load(path)
    np.testing.assert_array_equal(loaded.serve(x).numpy(), trained.predict(x, batch_size=len(x), verbose=0))
    # Integer inputs: every product is an exact integer, so any batching agrees.
    grid_x = np.round(4 * x)
    np.testing.assert_array_equal(loaded.serve(grid_x).numpy(), trained.predict(grid_x, verbose=0))
    # The served variables are the model's exact integers.
    served = {v.name.rsplit(":", 1)[0]: v.numpy() for v in loaded.variables}
    for variable in trained.trainable_weights:
        np.testing.assert_array_equal(served[variable.path], variable.numpy())
        assert keras_zim.is_integral([served[variable.path]])
    # TF Serving calls the `serving_default` signature, by input name.
    signature = loaded.signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    np.testing.assert_array_equal(signature(**{name: tf.constant(x)})["output_0"].numpy(), loaded.serve(x).numpy())


def test_plain_model_export_is_exact_too(trained, tmp_path):
    x, _ = _data()
    trained.export(str(tmp_path / "plain"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "plain"))
    np.testing.assert_array_equal(loaded.serve(x).numpy(), trained.predict(x, batch_size=len(x), verbose=0))


def test_a_failed_export_leaves_nothing_behind(trained, tmp_path):
    wrong = np.zeros((2, 5), "float32")  # the model takes 8 features: serve fails
    with pytest.raises(Exception):
        export.export_saved_model(trained, tmp_path / "zim", sample=wrong)
    assert os.listdir(tmp_path) == []


def test_a_crash_inside_model_export_leaves_nothing(trained, tmp_path, monkeypatch):
    original = trained.export

    def crash(path, **kwargs):
        original(path, **kwargs)  # a complete SavedModel is on disk...
        raise OSError("disk full")  # ...and then something fails

    monkeypatch.setattr(trained, "export", crash)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(trained, tmp_path / "zim")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", [None, 3, ""])
def test_export_refuses_a_path_that_is_not_one(trained, path):
    with pytest.raises(ValueError, match="Argument `path` must be a directory path"):
        export.export_saved_model(trained, path)


def test_export_refuses_off_grid_weights_and_existing_paths(tmp_path):
    model = _model()
    model.layers[0].bias.assign(np.full(16, 0.5, "float32"))
    with pytest.raises(ValueError, match="not on the grid of unit=1.0"):
        export.export_saved_model(model, tmp_path / "a")
    assert os.listdir(tmp_path) == []
    export.export_saved_model(model, tmp_path / "a", unit=0.5)  # on the half grid
    with pytest.raises(ValueError, match="must not exist yet"):
        export.export_saved_model(model, tmp_path / "a")
    with pytest.raises(ValueError, match="parent directory"):
        export.export_saved_model(model, tmp_path / "missing" / "a")


# --- integer widths ------------------------------------------------------


def test_signed_bits_is_still_importable_from_export():
    assert export.signed_bits is constraints.signed_bits


def _hand_model():
    model = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )
    first, second, norm = model.layers
    first.kernel.assign([[127.0, -128.0], [0.0, 3.0]])
    first.bias.assign([128.0, 0.0])
    second.kernel.assign([[40000.0, -1.0], [0.0, 0.0]])
    second.bias.assign([0.0, 0.0])
    norm.moving_mean.assign([0.25, -1.5])  # off the grid, not trainable
    return model


def test_report_gives_each_weight_its_width_and_narrowest_dtype():
    model = _hand_model()
    report = export.integer_report(model)
    assert [w.path for w in report] == [v.path for v in model.weights]
    kernel, bias, kernel_1, bias_1, gamma, beta, moving_mean, moving_variance = report
    assert (kernel.grid, kernel.low, kernel.high, kernel.bits, kernel.stored) == (True, -128, 127, 8, "int8")
    assert (kernel.shape, kernel.dtype) == ((2, 2), "float32")
    assert (bias.bits, bias.stored) == (9, "int16")
    assert (kernel_1.bits, kernel_1.stored) == (17, "int32")
    assert (bias_1.bits, bias_1.stored) == (1, "int8")
    assert (moving_mean.grid, moving_mean.bits, moving_mean.stored) == (False, None, "float32")
    assert moving_variance.stored == gamma.stored == beta.stored == "int8"  # ones and zeros


def test_report_reads_the_unit_of_the_models_optimizer():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="ones")])
    model.layers[0].kernel.assign([[1.5], [-0.5]])
    model.compile(optimizer=keras_zim.ZIM(unit=0.5), loss="mse")
    kernel = export.integer_report(model)[0]
    assert (kernel.grid, kernel.low, kernel.high) == (True, -1, 3)
    assert not export.integer_report(model, unit=1.0)[0].grid


# --- integer weight files ------------------------------------------------


def test_integer_round_trip_restores_the_identical_model(trained, tmp_path):
    report = export.save_integer_weights(trained, tmp_path / "w.npz")
    assert all(w.grid and w.stored == "int8" for w in report)
    fresh = _model(seed=10)
    assert not _same_weights(fresh, trained)
    export.load_integer_weights(fresh, tmp_path / "w.npz")
    assert _same_weights(fresh, trained)
    assert [w.dtype for w in fresh.get_weights()] == [w.dtype for w in trained.get_weights()]
    x, _ = _data()
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), trained.predict(x, verbose=0))


def test_int8_file_is_a_quarter_of_float32(tmp_path):
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256)])
    model.layers[0].kernel.assign(np.random.default_rng(0).integers(-128, 128, (256, 256)).astype("float32"))
    float_bytes = 4 * model.count_params()
    path = str(tmp_path / "w.npz")
    assert {w.stored for w in export.save_integer_weights(model, path)} == {"int8"}
    # One byte per weight, plus NumPy/zip headers and the JSON header (< 2 KiB).
    assert model.count_params() <= os.path.getsize(path) <= float_bytes / 4 + 2048
    assert os.path.getsize(path) / float_bytes < 0.26


def test_round_trip_keeps_off_grid_buffers_mixed_widths_and_low_precision_dtypes(tmp_path):
    model = _hand_model()
    export.save_integer_weights(model, tmp_path / "w.npz")
    fresh = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(2), keras.layers.BatchNormalization()]
    )
    export.load_integer_weights(fresh, tmp_path / "w.npz")
    assert _same_weights(fresh, model)

    low = _model(seed=4, dtype="bfloat16")
    report = export.save_integer_weights(low, tmp_path / "b.npz")
    assert {w.dtype for w in report[:4]} == {"bfloat16"} and {w.stored for w in report} == {"int8"}
    fresh = _model(seed=9, dtype="bfloat16")
    export.load_integer_weights(fresh, tmp_path / "b.npz")
    for a, b in zip(fresh.weights, low.weights):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


# --- bad input -----------------------------------------------------------


@pytest.mark.parametrize("unit", [0, -1.0, 3.0, float("inf"), float("nan"), "1", True])
def test_bad_unit_is_refused(unit):
    with pytest.raises(ValueError, match="Argument `unit` must be a positive power of two"):
        export.integer_report(_hand_model(), unit=unit)


@pytest.mark.parametrize("function", [export.integer_report, export.save_integer_weights, export.load_integer_weights])
def test_non_models_and_unbuilt_models_are_refused(function, tmp_path):
    args = (str(tmp_path / "w.npz"),) if function is not export.integer_report else ()
    with pytest.raises(ValueError, match="must be a keras.Model"):
        function([np.zeros(2)], *args)
    with pytest.raises(ValueError, match="must be built"):
        function(keras.Sequential([keras.layers.Dense(2)]), *args)


def test_save_refuses_off_grid_weights_and_bad_paths_and_writes_nothing(tmp_path):
    model = _hand_model()
    model.layers[0].bias.assign([0.5, 0.0])
    with pytest.raises(ValueError, match="'sequential.*/dense.*/bias' is not on the grid"):
        export.save_integer_weights(model, tmp_path / "w.npz")
    with pytest.raises(ValueError, match="ending in '.npz'"):
        export.save_integer_weights(_hand_model(), tmp_path / "w.h5")
    with pytest.raises(ValueError, match="existing directory"):
        export.save_integer_weights(_hand_model(), tmp_path / "missing" / "w.npz")
    assert os.listdir(tmp_path) == []


def test_load_refuses_bad_files_and_mismatched_models_leaving_the_model_unchanged(tmp_path):
    model = _hand_model()
    before = model.get_weights()
    with pytest.raises(ValueError, match="must be an existing file"):
        export.load_integer_weights(model, tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a keras_zim integer weights file"):
        export.load_integer_weights(model, tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a keras_zim integer weights file"):
        export.load_integer_weights(model, tmp_path / "other.npz")
    future = {"format": export.FORMAT, "version": 99, "unit": 1.0, "weights": []}
    np.savez(tmp_path / "future.npz", __meta__=np.array(json.dumps(future)))
    with pytest.raises(ValueError, match="format version 99"):
        export.load_integer_weights(model, tmp_path / "future.npz")
    export.save_integer_weights(_model(), tmp_path / "w.npz")
    with pytest.raises(ValueError, match="holds 4 weights but the model has 8"):
        export.load_integer_weights(model, tmp_path / "w.npz")
    wider = keras.Sequential([keras.Input((8,)), keras.layers.Dense(17), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="does not match the model's"):
        export.load_integer_weights(wider, tmp_path / "w.npz")
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


# --- LiteRT ----------------------------------------------------------------


def _wide_model(low, high, seed=0, constraint=True):
    """784-128-10 with integer kernels drawn uniformly in [low, high] and small integer biases."""
    rng = np.random.default_rng(seed)
    bound = keras_zim.constraints.IntegerRange(low, high) if constraint else None
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(128, "relu", kernel_constraint=bound),
            keras.layers.Dense(10, kernel_constraint=bound),
            keras.layers.LayerNormalization(center=False, scale=False),
        ]
    )
    for layer in model.layers[:2]:
        layer.kernel.assign(rng.integers(low, high + 1, layer.kernel.shape).astype("float32"))
        layer.bias.assign(rng.integers(-3, 4, layer.bias.shape).astype("float32"))
    return model


def _run_litert(path, x):
    interpreter = keras_zim.litert.interpreter(open(path, "rb").read())
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("low, high, dtype, ratio", [(-1, 1, "int4", 0.15), (-7, 7, "int4", 0.15), (-127, 127, "int8", 0.27)])
def test_litert_stores_the_kernels_as_integers_and_predicts_what_keras_predicts(tmp_path, low, high, dtype, ratio):
    model = _wide_model(low, high)
    x = np.random.default_rng(1).random((200, 784)).astype("float32")
    result = export.export_litert(model, tmp_path / "m.tflite", sample=x[:16])
    assert result.path == str(tmp_path / "m.tflite") and os.listdir(tmp_path) == ["m.tflite"]
    assert result.bytes == os.path.getsize(result.path)
    assert result.bytes <= ratio * result.float32_bytes  # int4: 1/8 of float32, int8: 1/4, plus the graph
    assert [t[1] for t in result.tensors] == [dtype, dtype]
    # The integers read back from the file are the kernels (LiteRT stores Dense kernels transposed).
    tensors = keras_zim.litert.integer_tensors(open(result.path, "rb").read())
    assert [(t.dtype, t.scale, t.zero_point) for t in tensors] == [(dtype, 1.0, 0)] * 2
    for tensor, layer in zip(sorted(tensors, key=lambda t: -t.values.size), model.layers[:2]):
        np.testing.assert_array_equal(tensor.values, keras.ops.convert_to_numpy(layer.kernel).T)
    # On inputs the check never saw: the same argmax, logits equal up to float32 rounding.
    got, want = _run_litert(result.path, x), model.predict(x, verbose=0)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_litert_of_a_zim_trained_conv_model(tmp_path):
    model = keras_zim.models.build_model("conv", discrete=True, seed=0)
    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("float32")
    y = np.arange(64) % 10
    model.compile(optimizer=keras_zim.ZIM(learning_rate=0.1, seed=0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    result = export.export_litert(model, tmp_path / "conv.tflite", sample=x[:8])
    assert [path.rsplit("/", 1)[-1] for path, _, _ in result.tensors] == ["kernel"] * 3
    np.testing.assert_array_equal(_run_litert(result.path, x).argmax(1), model.predict(x, verbose=0).argmax(1))


def test_litert_replaces_a_file_atomically_and_a_failed_check_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    model = _wide_model(-7, 7)
    export.export_litert(model, path)
    assert path.read_bytes()[4:8] == b"TFL3"

    read = keras_zim.litert.integer_tensors

    def corrupt(flatbuffer):  # as if the file's integers were not the kernels'
        tensors = read(flatbuffer)
        tensors[0].values = tensors[0].values + 1
        return tensors

    before = path.read_bytes()
    monkeypatch.setattr(keras_zim.litert, "integer_tensors", corrupt)
    with pytest.raises(ValueError, match="no integer tensor equal to"):
        export.export_litert(model, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.tflite"]


def test_litert_refuses_bad_models_and_paths(tmp_path):
    model = _wide_model(-7, 7)
    for bad in ("m.tfl", None, 3):
        with pytest.raises(ValueError, match="Argument `path` must be a path ending in '.tflite'"):
            export.export_litert(model, bad if bad is None or isinstance(bad, int) else tmp_path / bad)
    with pytest.raises(ValueError, match="parent directory"):
        export.export_litert(model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(ValueError, match="Argument `unit` must be a positive power of two"):
        export.export_litert(model, tmp_path / "m.tflite", unit=0)
    model.layers[0].kernel.assign(np.full((784, 128), 8.0, "float32"))  # outside its IntegerRange(-7, 7)
    with pytest.raises(ValueError, match=r"'sequential.*/dense.*/kernel' is outside the range of its constraint IntegerRange"):
        export.export_litert(model, tmp_path / "m.tflite")
    model.layers[0].kernel.assign(np.full((784, 128), 0.5, "float32"))
    with pytest.raises(ValueError, match="is not on the grid of unit=1.0"):
        export.export_litert(model, tmp_path / "m.tflite")
    wide = _wide_model(-200, 200, constraint=False)
    with pytest.raises(ValueError, match="needs 9 signed bits .* int8 or int4"):
        export.export_litert(wide, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="must be built"):
        export.export_litert(keras.Sequential([keras.layers.Dense(2)]), tmp_path / "m.tflite")
    assert os.listdir(tmp_path) == []


def test_litert_on_a_half_unit_grid(tmp_path):
    model = _wide_model(-7, 7, constraint=False)
    for layer in model.layers[:2]:
        layer.kernel.assign(layer.kernel * 0.5)
    result = export.export_litert(model, tmp_path / "m.tflite", unit=0.5)
    tensors = keras_zim.litert.integer_tensors(open(result.path, "rb").read())
    assert {t.scale for t in tensors} == {0.5} and {t.dtype for t in tensors} == {"int4"}


def test_report_gives_the_range_and_the_fraction_at_the_bound():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_constraint=keras_zim.constraints.Ternary())])
    model.layers[0].kernel.assign([[1.0, 0.0], [-1.0, 0.0]])
    kernel, bias = export.integer_report(model)
    assert (kernel.range, kernel.at_bound) == ((-1, 1), 0.5)
    assert (bias.range, bias.at_bound) == (None, None)
    halves = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, kernel_constraint=keras_zim.constraints.IntegerRange(-2, 2, unit=0.5))]
    )
    halves.layers[0].kernel.assign([[1.0], [0.5]])
    assert export.integer_report(halves, unit=0.5)[0][-2:] == ((-2, 2), 0.5)
    assert export.integer_report(halves, unit=1.0)[0].range == (-1, 1)


def test_litert_check_leaves_out_exact_ties(tmp_path):
    # Two output units with equal weights tie on every row: rounding, not the model, picks the argmax.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.layers[0].kernel.assign([[1.0, 1.0, -2.0], [2.0, 2.0, 0.0], [-1.0, -1.0, 1.0], [3.0, 3.0, 1.0]])
    result = export.export_litert(model, tmp_path / "tie.tflite", sample=np.random.default_rng(0).random((32, 4)).astype("float32"))
    assert [t[1] for t in result.tensors] == ["int4"]


def test_litert_refuses_a_sample_that_does_not_fit_the_inputs(tmp_path):
    model = _wide_model(-7, 7)
    with pytest.raises(ValueError, match=r"Argument `sample` must be one input batch per model input \(1\)"):
        export.export_litert(model, tmp_path / "m.tflite", sample=[np.zeros((2, 784)), np.zeros((2, 784))])
    assert os.listdir(tmp_path) == []

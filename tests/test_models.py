"""Tests of keras_zim.models: the paper's four models, integer-ready and scale-invariant."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zim
from keras_zim import datasets
from keras_zim import models

SHAPES = {"linear": (28, 28, 1), "hidden": (28, 28, 1), "conv": (28, 28, 1), "resnet": (32, 32, 3)}


@pytest.fixture(scope="module")
def built():
    """Each model once per kind of weights (integer kernels take a while to draw)."""
    cache = {}

    def get(name, discrete):
        if (name, discrete) not in cache:
            cache[name, discrete] = models.build_model(
                name, SHAPES[name], num_classes=7, discrete=discrete, seed=3
            )
        return cache[name, discrete]

    return get


def _images(shape, count=4):
    return np.random.default_rng(0).uniform(0, 1, (count,) + shape).astype(np.float32)


def _mnist(count, split="train"):
    """The first `count` real MNIST images of the shipped subset (every digit), in [0, 1]."""
    x_train, y_train, x_test, y_test = datasets.mnist_subset()
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return images[:count].astype(np.float32) / 255.0, labels[:count]


def _conv_kernels(model):
    return [w for w in model.trainable_weights if len(w.shape) == 4]


@pytest.mark.parametrize("name", models.MODELS)
@pytest.mark.parametrize("discrete", [True, False])
def test_models_build_with_integer_or_default_weights(built, name, discrete):
    model = built(name, discrete)
    assert model.name == name and model.output_shape == (None, 7)
    assert keras_zim.is_integral(model) == discrete
    kernels = [w for w in model.trainable_weights if "kernel" in w.path]
    biases = [w for w in model.trainable_weights if "bias" in w.path]
    assert kernels and len(kernels) + len(biases) == len(model.trainable_weights)
    assert all(np.all(np.asarray(b) == 0) for b in biases)
    assert all(np.any(np.asarray(k) != 0) for k in kernels)
    # The logits are normalised per example: mean 0, variance 1 (up to LayerNorm's epsilon).
    logits = np.asarray(model(_images(SHAPES[name]), training=False))
    np.testing.assert_allclose(logits.mean(-1), 0.0, atol=1e-4)
    assert np.all(logits.var(-1) <= 1.0 + 1e-4)


@pytest.mark.parametrize("discrete", [True, False])
def test_weights_are_a_function_of_the_seed(built, discrete):
    def weights(seed):
        model = models.build_model("linear", num_classes=7, discrete=discrete, seed=seed)
        return np.asarray(model.trainable_weights[0])

    assert np.array_equal(weights(0), weights(0))
    assert not np.array_equal(weights(0), weights(1))
    # Every layer draws its own kernel: layers of one shape get different weights.
    same_shape = {}
    for weight in built("resnet", discrete).trainable_weights:
        same_shape.setdefault(tuple(weight.shape), []).append(np.asarray(weight))
    first, second = same_shape[(3, 3, 16, 16)][:2]
    assert not np.array_equal(first, second)


def test_integer_kernels_follow_the_paper_initialisation(built):
    hidden = np.asarray(built("hidden", True).trainable_weights[0])
    # m = round(sqrt(784 * 128)) = 317 unit trials over 100,352 entries: almost all 0 or +-1.
    assert hidden.shape == (784, 128)
    assert np.abs(hidden).sum() <= 317 and np.isin(hidden, [-2, -1, 0, 1, 2]).all()


@pytest.mark.parametrize("name", models.MODELS)
def test_outputs_do_not_depend_on_the_scale_of_the_kernels(built, name):
    # Scale invariance is what lets integer weights work: multiplying every kernel by
    # 7 (as integer weights that grew would) leaves the outputs unchanged. Biases are
    # zero; BatchNorm is taken in training mode, where it normalises by the batch.
    model = built(name, True)
    images = _images(SHAPES[name], count=8)
    before = np.asarray(model(images, training=True))
    weights = [np.asarray(w) for w in model.trainable_weights]
    for weight, value in zip(model.trainable_weights, weights):
        weight.assign(7.0 * value)
    after = np.asarray(model(images, training=True))
    for weight, value in zip(model.trainable_weights, weights):
        weight.assign(value)
    # Exact up to the normalisations' epsilon (1e-3), which matters while variances are small.
    np.testing.assert_allclose(after, before, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", ["conv", "resnet"])
def test_no_conv_channel_starts_all_zero(built, name):
    # Discrete(draw="unit"): every output channel gets fan_in unit trials of its
    # own. With the paper's rule (e.g. 7 trials for a 3x3x16x16 kernel) most
    # channels started all zero and never moved.
    kernels = _conv_kernels(built(name, True))
    assert len(kernels) == (2 if name == "conv" else 9)
    for kernel in kernels:
        k = np.asarray(kernel)
        assert np.all(k == np.round(k)), kernel.path
        per_channel = np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
        np.testing.assert_array_equal(per_channel, k.size // k.shape[-1], err_msg=kernel.path)


@pytest.mark.parametrize("name", ["conv", "resnet"])
def test_every_channel_is_live_and_every_kernel_gets_a_gradient(name):
    # A channel that is 0 on every image stays 0 after BatchNorm and ReLU, whose
    # gradient at 0 is 0: its kernel gets exactly zero gradient and ZIM (sign(0) = 0)
    # never moves it. With the paper's rule most channels were such, and the
    # resnet's last block was all zero: no kernel got any gradient at all.
    model = models.build_model(name, discrete=True, seed=0)
    images, labels = _mnist(64)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    probe = keras.Model(model.input, [layer.output for layer in norms])
    for layer, output in zip(norms, probe(images, training=True)):
        output = np.asarray(output).reshape(-1, output.shape[-1])
        assert np.all(output.std(axis=0) > 0), f"{layer.name}: {np.sum(output.std(axis=0) == 0)} dead channels"
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    gradients = tape.gradient(loss, model.trainable_weights)
    for kernel, gradient in zip(model.trainable_weights, gradients):
        if "kernel" in kernel.path:
            assert np.any(np.asarray(gradient) != 0), kernel.path


@pytest.mark.parametrize("name", ["conv", "resnet"])
def test_calibrate_batch_norm_makes_inference_match_training_mode(built, name):
    model = built(name, True)
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    images = _images(SHAPES[name], count=16)
    saved = [(np.asarray(l.moving_mean).copy(), np.asarray(l.moving_variance).copy()) for l in layers]
    weights = [np.asarray(w).copy() for w in model.trainable_weights]
    try:
        assert models.calibrate_batch_norm(model, images) == len(layers) > 0
        # Moving statistics now equal the batch's: both modes compute the same function.
        np.testing.assert_allclose(
            np.asarray(model(images, training=False)), np.asarray(model(images, training=True)),
            rtol=1e-3, atol=1e-3,
        )
        assert all(layer.momentum == 0.9 for layer in layers)  # restored
        for weight, value in zip(model.trainable_weights, weights):
            np.testing.assert_array_equal(np.asarray(weight), value)
    finally:
        for layer, (mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)


def test_calibrate_batch_norm_finds_nested_layers_and_skips_models_without_any(built):
    assert models.calibrate_batch_norm(built("hidden", True), _images(SHAPES["hidden"])) == 0
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((3,)), inner])
    batch = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert models.calibrate_batch_norm(outer, batch) == 1
    np.testing.assert_allclose(np.asarray(inner.layers[0].moving_mean), batch.mean(0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(inner.layers[0].moving_variance), batch.var(0), rtol=1e-6)


def test_unknown_model():
    with pytest.raises(ValueError, match=r"Argument `name` must be one of \('linear', 'hidden', 'conv', 'resnet'\)"):
        models.build_model("vgg")


def test_a_short_fit_with_zim_keeps_the_weights_integral():
    model = models.build_model("linear", discrete=True, seed=0)
    model.compile(
        optimizer=keras_zim.ZIM(learning_rate=0.1, seed=0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = _images((28, 28, 1), count=32)
    before = [np.asarray(w).copy() for w in model.trainable_weights]
    model.fit(images, np.arange(32) % 10, batch_size=16, epochs=1, verbose=0)
    assert keras_zim.is_integral(model)
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.trainable_weights))


def test_conv_learns_with_zim_on_real_mnist():
    # 1,024 real training images, 3 epochs of 16 steps (batch 64) with ZIM's
    # defaults from integer kernels, then BatchNorm calibrated on 512 of them;
    # tested on the subset's 1,000 test images (100 per digit).
    images, labels = _mnist(1024)
    test_images, test_labels = _mnist(1000, "test")
    keras.utils.set_random_seed(0)
    model = models.build_model("conv", discrete=True, seed=0)
    model.compile(
        optimizer=keras_zim.ZIM(seed=0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(images, labels, batch_size=64, epochs=3, shuffle=False, verbose=0)
    assert keras_zim.is_integral(model)
    models.calibrate_batch_norm(model, images[:512])
    predicted = np.argmax(np.asarray(model(test_images, training=False)), axis=-1)
    accuracy = np.mean(predicted == test_labels)
    # A guess that ignores the images is right with probability at most
    # chance = 0.1 (the largest class share), so its accuracy on 1,000 images
    # has standard deviation at most sqrt(0.1 * 0.9 / 1000) = 0.0095. Ask for
    # chance + 50 of those standard deviations (58%; measured: 80.5%).
    chance = np.bincount(test_labels).max() / len(test_labels)
    sigma = np.sqrt(chance * (1 - chance) / len(test_labels))
    assert accuracy > chance + 50 * sigma, accuracy
    # Logits that ignore the images cannot beat the labels' entropy H (about
    # ln 10 = 2.30) in cross-entropy; ask the last epoch's training loss for
    # under 0.6 H (measured: 1.00, about 0.43 H).
    shares = np.bincount(labels) / len(labels)
    entropy = -np.sum(shares * np.log(shares))
    assert history.history["loss"][-1] < 0.6 * entropy, (history.history["loss"], entropy)


def test_pytorch_start_is_uniform_in_one_over_sqrt_fan_in():
    # PyTorch's nn.Linear: kernel and bias U(+-1/sqrt(fan_in)). 784 x 128 draws of a
    # uniform on [-a, a] have max |w| within a * (1 - 1e-3) of a with probability
    # 1 - (1 - 1e-3) ** 100352 ~ 1, and a standard deviation a / sqrt(3) to 1%.
    model = models.build_model("hidden", init="pytorch", seed=0)
    hidden_kernel, hidden_bias, logit_kernel, logit_bias = [np.asarray(w) for w in model.trainable_weights]
    for kernel, bias, fan_in in ((hidden_kernel, hidden_bias, 784), (logit_kernel, logit_bias, 128)):
        limit = 1 / np.sqrt(fan_in)
        assert np.abs(kernel).max() <= limit and np.abs(bias).max() <= limit
        assert np.abs(kernel).max() > 0.99 * limit
        assert np.all(bias != 0)
    np.testing.assert_allclose(hidden_kernel.std(), 1 / np.sqrt(3 * 784), rtol=0.01)
    # Keras's start: Glorot kernels (limit sqrt(6 / (784 + 128))) and zero biases.
    keras_start = [np.asarray(w) for w in models.build_model("hidden", init="keras", seed=0).trainable_weights]
    assert np.abs(keras_start[0]).max() > 1.5 / np.sqrt(784)
    assert not keras_start[1].any() and not keras_start[3].any()
    assert np.array_equal(keras_start[0], np.asarray(models.build_model("hidden", seed=0).trainable_weights[0]))


def test_the_papers_conv_rule_leaves_channels_all_zero():
    # conv_draw="kernel": one multinomial of m = round(size ** (1/4)) trials per kernel,
    # over PyTorch's start: at most m output channels can be non-zero.
    model = models.build_model("conv", discrete=True, seed=0, conv_draw="kernel", discrete_base="pytorch")
    assert keras_zim.is_integral(model)
    for kernel in _conv_kernels(model):
        k = np.asarray(kernel)
        trials = round(k.size ** 0.25)
        assert np.abs(k).sum() <= trials
        live = np.count_nonzero(np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0))
        assert live <= trials < k.shape[-1]


@pytest.mark.parametrize("argument, message", [
    ({"init": "torch"}, "Argument `init` must be one of ('keras', 'pytorch')"),
    ({"conv_draw": "layer"}, "Argument `conv_draw` must be one of ('kernel', 'unit')"),
    ({"discrete_base": "he"}, "Argument `discrete_base` must be one of ('glorot_uniform', 'pytorch')"),
])
def test_bad_start_arguments(argument, message):
    with pytest.raises(ValueError) as error:
        models.build_model("linear", **argument)
    assert message in str(error.value)

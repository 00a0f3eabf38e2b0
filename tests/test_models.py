"""Tests of keras_zim.models: the paper's models, integer-ready and scale-invariant."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_zim
from keras_zim import datasets
from keras_zim import models

SHAPES = {"linear": (28, 28, 1), "hidden": (28, 28, 1), "conv": (28, 28, 1), "resnet": (32, 32, 3),
          "paper_conv": (28, 28, 1), "resnet18": (28, 28, 1)}


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
    biases = [w for w in model.trainable_weights if "bias" in w.path or "beta" in w.path]
    scales = [w for w in model.trainable_weights if "gamma" in w.path]  # resnet18's BatchNorm
    assert kernels and len(kernels) + len(biases) + len(scales) == len(model.trainable_weights)
    assert bool(scales) == (name == "resnet18")
    assert all(np.all(np.asarray(b) == 0) for b in biases)
    assert all(np.all(np.asarray(g) == 1) for g in scales)
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


@pytest.mark.parametrize("name, convolutions", [("conv", 2), ("resnet", 9), ("paper_conv", 2), ("resnet18", 20)])
def test_no_conv_channel_starts_all_zero(built, name, convolutions):
    # Discrete(draw="unit"): every output channel gets fan_in unit trials of its
    # own. With the paper's rule (e.g. 7 trials for a 3x3x16x16 kernel) most
    # channels started all zero and never moved.
    kernels = _conv_kernels(built(name, True))
    assert len(kernels) == convolutions
    for kernel in kernels:
        k = np.asarray(kernel)
        assert np.all(k == np.round(k)), kernel.path
        per_channel = np.abs(k).reshape(-1, k.shape[-1]).sum(axis=0)
        fan_in = k.size // k.shape[-1]
        assert np.all(per_channel > 0), kernel.path
        # Each channel's fan_in trials all count, except those that land on an entry where
        # Glorot's float32 draw is exactly 0 (sign 0): about 2**-23 of the entries, so a
        # handful of channels among resnet18's 11 million weights (3 at this seed).
        assert np.all(per_channel <= fan_in), kernel.path
        assert np.sum(per_channel < fan_in) <= max(2, k.size // 2**20), kernel.path


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


@pytest.mark.parametrize("name", ["vgg", "resnet50", "convolutional", "ResNet18"])
def test_unknown_model(name):
    with pytest.raises(ValueError) as error:
        models.build_model(name)
    assert str(error.value) == (
        "Argument `name` must be one of ('linear', 'hidden', 'conv', 'resnet', 'paper_conv', "
        f"'resnet18'). Received: name={name!r}"
    )


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


# The authors' architectures (github.com/hellas-ai/neurips2025-convergence-for-discrete-parameter-updates,
# models/convolutional.py and models/resnet.py).


def _conv_parameters(size, channels, filters, bias=False):
    return size * size * channels * filters + (filters if bias else 0)


def _resnet18_parameters(channels, classes):
    """torchvision's resnet18 counted from its layer shapes, with a `channels`-input stem."""
    total = _conv_parameters(7, channels, 64) + 2 * 64  # stem and its BatchNorm (scale, offset)
    width = 64
    for filters, strides in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block_strides in (strides, 1):
            total += _conv_parameters(3, width, filters) + 2 * filters
            total += _conv_parameters(3, filters, filters) + 2 * filters
            if block_strides != 1 or width != filters:  # 1x1 projection shortcut and its BatchNorm
                total += _conv_parameters(1, width, filters) + 2 * filters
            width = filters
    return total + 512 * classes + classes


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_paper_conv_has_the_authors_layers():
    model = models.build_model("paper_conv", discrete=True, seed=0)
    # conv1 (1 -> 32, bias), conv2 (32 -> 64, bias), fc1 (7 * 7 * 64 -> 128), fc2 (128 -> 10);
    # the LayerNorms have no weights (F.layer_norm without weight or bias).
    expected = (_conv_parameters(3, 1, 32, bias=True) + _conv_parameters(3, 32, 64, bias=True)
                + 7 * 7 * 64 * 128 + 128 + 128 * 10 + 10)
    assert expected == 421_642 == model.count_params() == _trainable(model)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization)]
    assert [sorted(layer.axis) for layer in norms] == [[1, 2, 3], [1, 2, 3], [-1], [-1]]
    assert all(not layer.weights and layer.epsilon == 1e-5 for layer in norms)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.padding for layer in convs] == ["same", "same"] and all(layer.use_bias for layer in convs)


def test_resnet18_has_torchvisions_parameter_count():
    # torchvision documents 11,689,512 parameters for resnet18 (3 input channels, 1,000 classes).
    assert _resnet18_parameters(3, 1000) == 11_689_512
    model = models.build_model("resnet18", seed=0)
    assert _trainable(model) == _resnet18_parameters(1, 10) == 11_175_370
    # BatchNorm's moving mean and variance (non-trainable) are the rest of count_params.
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 20 and all(layer.epsilon == 1e-5 and layer.scale and layer.center for layer in norms)
    assert model.count_params() == 11_175_370 + 2 * sum(layer.gamma.shape[0] for layer in norms)


def _torch_forward(name, model, images):
    """The authors' forward pass in PyTorch (training mode), with `model`'s weights."""
    import torch
    import torch.nn.functional as F

    weights = {w.path: torch.tensor(np.asarray(w)) for w in model.weights}

    def created(kind):
        # model.layers is in graph order, which may put a block's shortcut before its second
        # convolution; Keras numbers the automatic names of each kind in creation order.
        def number(layer):
            suffix = layer.name.rsplit("_", 1)[-1]
            return int(suffix) if suffix.isdigit() else 0

        return iter(sorted((layer for layer in model.layers if isinstance(layer, kind)), key=number))

    convs = created(keras.layers.Conv2D)
    norms = created(keras.layers.BatchNormalization)
    denses = created(keras.layers.Dense)

    def conv(x, stride=1, padding=None):
        layer = next(convs)
        kernel = weights[layer.kernel.path].permute(3, 2, 0, 1)  # HWIO -> OIHW
        bias = weights[layer.bias.path] if layer.use_bias else None
        size = kernel.shape[-1]
        return F.conv2d(x, kernel, bias, stride=stride, padding=size // 2 if padding is None else padding)

    def batch_norm(x):
        layer = next(norms)
        return F.batch_norm(x, None, None, weights[layer.gamma.path], weights[layer.beta.path],
                            training=True, eps=1e-5)

    def dense(x):
        layer = next(denses)
        return F.linear(x, weights[layer.kernel.path].T, weights[layer.bias.path])

    x = torch.tensor(images).permute(0, 3, 1, 2)  # NHWC -> NCHW
    if name == "paper_conv":
        for _ in range(2):
            x = F.max_pool2d(F.relu(conv(x)), 2, 2)
            x = F.layer_norm(x, x.shape[1:])
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras flattens (H, W, C)
        x = F.relu(dense(x))
        x = F.layer_norm(x, x.shape[1:])
    else:
        x = F.max_pool2d(F.relu(batch_norm(conv(x, stride=2))), 3, 2, padding=1)
        for filters, strides in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for block_strides in (strides, 1):
                y = F.relu(batch_norm(conv(x, block_strides)))
                y = batch_norm(conv(y))
                if block_strides != 1 or x.shape[1] != filters:
                    x = batch_norm(conv(x, block_strides, padding=0))
                x = F.relu(x + y)
        x = x.mean(dim=(2, 3))
    x = dense(x)
    return F.layer_norm(x, x.shape[1:]).numpy()


@pytest.mark.parametrize("name", ["paper_conv", "resnet18"])
def test_the_authors_models_compute_what_their_pytorch_code_computes(name):
    # Same weights, same images: PyTorch's padding (1 on every side for the strided
    # 3x3 convolutions, 3 for the 7x7 stem, 1 for the max pool) and layer order.
    # "same" padding in Keras puts the odd pixel after, so a mistake here changes
    # every output. Real-valued PyTorch starts, so that no weight is exactly 0.
    pytest.importorskip("torch")
    model = models.build_model(name, init="pytorch", seed=1)
    for layer in model.layers:  # non-trivial BatchNorm scales and offsets
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(np.random.default_rng(2).uniform(0.5, 1.5, layer.gamma.shape))
            layer.beta.assign(np.random.default_rng(3).uniform(-0.2, 0.2, layer.beta.shape))
    images = np.random.default_rng(0).normal(size=(6, 28, 28, 1)).astype(np.float32)
    expected = _torch_forward(name, model, images)
    np.testing.assert_allclose(np.asarray(model(images, training=True)), expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["paper_conv", "resnet18"])
def test_the_papers_integer_start_for_the_authors_models(name):
    # custom_init: every `weight` (kernels and BatchNorm scales) becomes
    # sign(w0) * Multinomial(round(size ** (1/ndim)), q) counts; every bias 0.
    model = models.build_model(name, discrete=True, seed=0, conv_draw="kernel", discrete_base="pytorch")
    assert keras_zim.is_integral(model)
    for weight in model.trainable_weights:
        w = np.asarray(weight)
        if "bias" in weight.path or "beta" in weight.path:
            assert not w.any(), weight.path
        elif "kernel" in weight.path:
            assert np.abs(w).sum() == round(w.size ** (1 / w.ndim)), weight.path
    if name == "resnet18":
        # Over a scale of ones q is uniform and m = C: Multinomial(C, 1/C) counts, so each
        # scale is 0 with probability (1 - 1/C) ** C ~ exp(-1). 4,800 channels: the share
        # of zeros has standard deviation about sqrt(0.37 * 0.63 / 4800) = 0.007; allow 5.
        scales = [np.asarray(w) for w in model.trainable_weights if "gamma" in w.path]
        assert all(s.sum() == s.size and s.min() >= 0 for s in scales)
        zeros = np.concatenate(scales) == 0
        expected = np.mean(np.concatenate([np.full(s.size, (1 - 1 / s.size) ** s.size) for s in scales]))
        assert abs(zeros.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / zeros.size)


@pytest.mark.parametrize("name", ["paper_conv", "resnet18"])
def test_a_short_fit_of_the_authors_models_with_zim_stays_integral(name):
    model = models.build_model(name, discrete=True, seed=0)
    model.compile(
        optimizer=keras_zim.ZIM(learning_rate=1.0, seed=0),  # the paper's r = 1, n = d
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images, labels = _mnist(24)
    before = [np.asarray(w).copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=8, epochs=1, shuffle=False, verbose=0)  # 3 steps
    assert keras_zim.is_integral(model)
    moved = sum(int(np.abs(a - np.asarray(b)).sum()) for a, b in zip(before, model.trainable_weights))
    # 3 steps of n = d unit trials each; a trial on a zero gradient (sign 0) is a no-op and
    # moves can cancel between steps. Ask for a net change of d / 4 (measured: 1.17 d for
    # paper_conv, 0.54 d for resnet18, where many gradients are exactly 0).
    assert moved > _trainable(model) // 4
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.all(np.isfinite(np.asarray(model(images, training=False))))

"""Tests of keras_zim.models: the paper's four models, integer-ready and scale-invariant."""

import keras
import numpy as np
import pytest

import keras_zim
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

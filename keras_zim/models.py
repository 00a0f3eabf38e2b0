"""The paper's four models, scale-invariant so that integer weights work.

Integer weights make activations large; a normalisation without scale or
offset makes each model invariant to that scale. `linear` and `hidden` end in
`LayerNormalization(center=False, scale=False)` on the logits, as in the
paper's code; `conv` and `resnet` normalise every convolution with
`BatchNormalization(center=False, scale=False)` and end in the same LayerNorm.
With `discrete=True` every kernel starts as integers from
`keras_zim.initializers.Discrete` and every bias at zero, so all trainable
weights start on the grid; otherwise Keras's defaults (Glorot uniform kernels,
zero biases) are used, seeded.
"""

import keras

from keras_zim.initializers import Discrete

__all__ = ["MODELS", "build_model"]

MODELS = ("linear", "hidden", "conv", "resnet")


class _Kernels:
    """Kernel initialisers with a distinct, reproducible seed per layer."""

    def __init__(self, discrete, seed):
        self.discrete = discrete
        self.seed = seed
        self.count = 0

    def __call__(self):
        self.count += 1
        seed = self.seed * 1000 + self.count
        if self.discrete:
            return Discrete(seed=seed)
        return keras.initializers.GlorotUniform(seed=seed)


def _scale_free():
    return keras.layers.LayerNormalization(center=False, scale=False)


def _conv_norm(x, filters, kernels, strides=1, relu=True):
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, kernel_initializer=kernels()
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)(x)
    return keras.layers.ReLU()(x) if relu else x


def _residual(x, filters, kernels, strides):
    shortcut = x
    y = _conv_norm(x, filters, kernels, strides)
    y = _conv_norm(y, filters, kernels, relu=False)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer=kernels()
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def build_model(name, input_shape=(28, 28, 1), num_classes=10, discrete=False, seed=0):
    """Builds one of the paper's models; it outputs normalised logits.

    - `linear`: flatten, `Dense(num_classes)`, LayerNorm.
    - `hidden`: flatten, `Dense(128, relu)`, `Dense(num_classes)`, LayerNorm
      (784-128-10 on MNIST).
    - `conv`: two 3x3 convolutions (16 and 32 filters) each with BatchNorm,
      ReLU and 2x2 max pooling, then `Dense(num_classes)`, LayerNorm.
    - `resnet`: a 3x3 stem (16 filters) and three residual blocks (16, 32 and
      64 filters, the last two with stride 2), global average pooling,
      `Dense(num_classes)`, LayerNorm.

    Train with `from_logits=True` losses.

    Args:
        name: one of `MODELS`.
        input_shape: image shape. Defaults to `(28, 28, 1)`.
        num_classes: number of outputs. Defaults to `10`.
        discrete: integer kernels (`keras_zim.initializers.Discrete`) and zero
            biases, for ZIM. Defaults to `False` (Keras's defaults).
        seed: int; the model's weights are a function of it. Defaults to `0`.

    Returns:
        An uncompiled `keras.Model` named `name`.

    Raises:
        ValueError: for an unknown `name`.
    """
    if name not in MODELS:
        raise ValueError(f"Argument `name` must be one of {MODELS}. Received: name={name!r}")
    kernels = _Kernels(discrete, seed)
    inputs = keras.Input(input_shape)
    if name in ("linear", "hidden"):
        x = keras.layers.Flatten()(inputs)
        if name == "hidden":
            x = keras.layers.Dense(128, activation="relu", kernel_initializer=kernels())(x)
    elif name == "conv":
        x = inputs
        for filters in (16, 32):
            x = _conv_norm(x, filters, kernels)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Flatten()(x)
    else:
        x = _conv_norm(inputs, 16, kernels)
        for filters, strides in ((16, 1), (32, 2), (64, 2)):
            x = _residual(x, filters, kernels, strides)
        x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(num_classes, kernel_initializer=kernels())(x)
    outputs = _scale_free()(x)
    return keras.Model(inputs, outputs, name=name)

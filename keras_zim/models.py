"""The paper's models, scale-invariant so that integer weights work.

Integer weights make activations large; a normalisation without scale or
offset makes each model invariant to that scale. `linear` and `hidden` end in
`LayerNormalization(center=False, scale=False)` on the logits, as in the
paper's code; `conv` and `resnet` (keras_zim's small models) normalise every
convolution with `BatchNormalization(center=False, scale=False)` and end in
the same LayerNorm. `paper_conv` and `resnet18` are the authors' own
convolutional model and ResNet-18, layer for layer (see `build_model`).
With `discrete=True` every kernel starts as integers from
`keras_zim.initializers.Discrete` and every bias at zero, so all trainable
weights start on the grid; otherwise real-valued weights start as `init` says:
`"keras"` (Glorot uniform kernels, zero biases) or `"pytorch"` (PyTorch's
`nn.Linear`/`nn.Conv2d` default: kernels and biases uniform in
+-1/sqrt(fan_in)), seeded. Dense kernels use the paper's rule
(`Discrete(draw="kernel")`); convolution kernels use `Discrete(draw="unit")`,
one draw of `fan_in` trials per output channel, so that no channel starts
all zero: with the paper's rule most did, and a zero channel behind
BatchNorm and ReLU gets no gradient, so ZIM never moves it (the resnet did
not learn at all; see `Discrete`). `conv_draw="kernel"` keeps the paper's rule
for convolutions too, to reproduce that failure.

Evaluate BatchNorm models trained with ZIM after `calibrate_batch_norm`: one
ZIM step changes a convolution kernel far more than one SGD step, so the
moving averages of BatchNorm's statistics mix networks that differ, and the
inference-mode model can be far worse than the one being trained (see
`calibrate_batch_norm`).
"""

import keras

from keras_zim.initializers import Discrete

__all__ = ["INITS", "MODELS", "build_model", "calibrate_batch_norm", "pytorch_kernel", "torchvision_conv_kernel"]

MODELS = ("linear", "hidden", "conv", "resnet", "paper_conv", "resnet18")
INITS = ("keras", "pytorch")
_DRAWS = ("kernel", "unit")


def pytorch_kernel(seed=None):
    """PyTorch's default kernel initialisation for `nn.Linear` and `nn.Conv2d`.

    `kaiming_uniform_(a=sqrt(5))` is uniform in +-1/sqrt(fan_in), which is
    Keras's `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`
    (limit sqrt(3 * scale / fan_in) = 1/sqrt(fan_in)).

    Args:
        seed: int or None. Defaults to `None`.

    Returns:
        A `keras.initializers.VarianceScaling`.
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )


def torchvision_conv_kernel(seed=None):
    """torchvision's ResNet convolution initialisation.

    `kaiming_normal_(mode="fan_out", nonlinearity="relu")`: normal with
    standard deviation sqrt(2 / fan_out), Keras's
    `VarianceScaling(scale=2, mode="fan_out", distribution="untruncated_normal")`
    (fan_out = kernel height x width x filters in both).

    Args:
        seed: int or None. Defaults to `None`.

    Returns:
        A `keras.initializers.VarianceScaling`.
    """
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed
    )


class _Kernels:
    """Kernel and bias initialisers with a distinct, reproducible seed per layer."""

    def __init__(self, discrete, seed, init="keras", conv_draw="unit", discrete_base=None):
        self.discrete = discrete
        self.seed = seed
        self.init = init
        self.conv_draw = conv_draw
        self.discrete_base = discrete_base
        self.count = 0

    def __call__(self, draw="kernel", pytorch=pytorch_kernel):
        """The next layer's kernel initialiser; `pytorch` is that layer's PyTorch start."""
        self.count += 1
        seed = self.seed * 1000 + self.count
        if self.discrete:
            if draw == "unit":
                draw = self.conv_draw
            if self.discrete_base == "pytorch":
                return Discrete(base=pytorch(seed), seed=seed, draw=draw)
            return Discrete(seed=seed, draw=draw)
        if self.init == "pytorch":
            return pytorch(seed)
        return keras.initializers.GlorotUniform(seed=seed)

    def scale(self):
        """BatchNorm's scale: ones, or the paper's rule over ones for the paper's integer start.

        The authors' `custom_init` draws every parameter named `weight`,
        BatchNorm's included, as `Multinomial(round(size ** (1/ndim)), q)`
        counts: over a scale of ones that is `Multinomial(C, uniform)` over C
        channels, about exp(-1) = 37% of them 0. keras_zim's start keeps 1.
        """
        if self.discrete and self.conv_draw == "kernel":
            self.count += 1
            return Discrete(base="ones", seed=self.seed * 1000 + self.count, draw="kernel")
        return "ones"

    def bias(self, fan_in):
        """Zeros (integer weights, Keras), or PyTorch's U(+-1/sqrt(fan_in))."""
        if self.discrete or self.init == "keras":
            return "zeros"
        limit = 1.0 / fan_in**0.5
        return keras.initializers.RandomUniform(-limit, limit, seed=self.seed * 1000 + 500 + self.count)


def _scale_free():
    return keras.layers.LayerNormalization(center=False, scale=False)


def _conv_norm(x, filters, kernels, strides=1, relu=True):
    x = keras.layers.Conv2D(
        filters, 3, strides=strides, padding="same", use_bias=False,
        kernel_initializer=kernels("unit"),
    )(x)
    x = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)(x)
    return keras.layers.ReLU()(x) if relu else x


def _residual(x, filters, kernels, strides):
    shortcut = x
    y = _conv_norm(x, filters, kernels, strides)
    y = _conv_norm(y, filters, kernels, relu=False)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=strides, use_bias=False, kernel_initializer=kernels("unit")
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def _paper_norm(axis=-1):
    """`F.layer_norm(x, x.shape[1:])`: no scale or offset, PyTorch's epsilon."""
    return keras.layers.LayerNormalization(axis=axis, epsilon=1e-5, center=False, scale=False)


def _paper_conv(inputs, kernels):
    x = inputs
    for filters in (32, 64):
        fan_in = 3 * 3 * x.shape[-1]
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu",
            kernel_initializer=kernels("unit"), bias_initializer=kernels.bias(fan_in),
        )(x)
        x = keras.layers.MaxPooling2D()(x)
        x = _paper_norm(axis=[1, 2, 3])(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        128, activation="relu", kernel_initializer=kernels(), bias_initializer=kernels.bias(x.shape[-1])
    )(x)
    return _paper_norm()(x)


def _torch_conv(x, filters, size, kernels, strides=1, pytorch=torchvision_conv_kernel):
    """`nn.Conv2d(padding=size // 2, bias=False)`: "same" padding is PyTorch's only at stride 1."""
    padding = "same"
    if strides > 1 and size > 1:
        x = keras.layers.ZeroPadding2D(size // 2)(x)
        padding = "valid"
    return keras.layers.Conv2D(
        filters, size, strides=strides, padding=padding, use_bias=False,
        kernel_initializer=kernels("unit", pytorch=pytorch),
    )(x)


def _torch_batch_norm(x, kernels):
    """`nn.BatchNorm2d`: momentum 0.1 (Keras's 0.9), epsilon 1e-5, scale and offset."""
    return keras.layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, gamma_initializer=kernels.scale()
    )(x)


def _basic_block(x, filters, kernels, strides):
    shortcut = x
    y = _torch_conv(x, filters, 3, kernels, strides)
    y = keras.layers.ReLU()(_torch_batch_norm(y, kernels))
    y = _torch_batch_norm(_torch_conv(y, filters, 3, kernels), kernels)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = _torch_batch_norm(_torch_conv(shortcut, filters, 1, kernels, strides), kernels)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def _resnet18(inputs, kernels):
    # The authors replace torchvision's stem by a new nn.Conv2d (PyTorch's default start).
    x = _torch_conv(inputs, 64, 7, kernels, strides=2, pytorch=pytorch_kernel)
    x = keras.layers.ReLU()(_torch_batch_norm(x, kernels))
    # nn.MaxPool2d(3, 2, padding=1); its inputs are >= 0, so zero padding is -inf padding.
    x = keras.layers.MaxPooling2D(3, strides=2)(keras.layers.ZeroPadding2D(1)(x))
    for filters, strides in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = _basic_block(x, filters, kernels, strides)
        x = _basic_block(x, filters, kernels, 1)
    return keras.layers.GlobalAveragePooling2D()(x)


def build_model(
    name,
    input_shape=(28, 28, 1),
    num_classes=10,
    discrete=False,
    seed=0,
    init="keras",
    conv_draw="unit",
    discrete_base="glorot_uniform",
):
    """Builds one of the paper's models; it outputs normalised logits.

    - `linear`: flatten, `Dense(num_classes)`, LayerNorm.
    - `hidden`: flatten, `Dense(128, relu)`, `Dense(num_classes)`, LayerNorm
      (784-128-10 on MNIST).
    - `conv`: two 3x3 convolutions (16 and 32 filters) each with BatchNorm,
      ReLU and 2x2 max pooling, then `Dense(num_classes)`, LayerNorm.
    - `resnet`: a 3x3 stem (16 filters) and three residual blocks (16, 32 and
      64 filters, the last two with stride 2), global average pooling,
      `Dense(num_classes)`, LayerNorm.
    - `paper_conv`: the authors' convolutional model: two 3x3 convolutions
      ("same" padding, 32 and 64 filters, with biases) each followed by ReLU,
      2x2 max pooling and a LayerNorm over (H, W, C), then `Dense(128, relu)`,
      LayerNorm, `Dense(num_classes)`, LayerNorm; every LayerNorm without
      scale or offset, epsilon 1e-5 (421,642 parameters on MNIST).
    - `resnet18`: the authors' ResNet-18: torchvision's `resnet18` with a new
      7x7 stride-2 stem for the input's channels, 3x3 stride-2 max pooling,
      four stages of two BasicBlocks (64, 128, 256 and 512 filters, 1x1
      projection shortcuts where the shape changes), BatchNorm with scale and
      offset (epsilon 1e-5), global average pooling, `Dense(num_classes)`,
      LayerNorm (11,175,370 trainable parameters on MNIST). Padding is
      PyTorch's (explicit zero padding before strided convolutions).
      With `init="pytorch"` its convolutions start as torchvision's
      (`torchvision_conv_kernel`), the stem and `Dense` as `pytorch_kernel`.
      BatchNorm's scale starts at 1, and with `discrete=True` and
      `conv_draw="kernel"` as the authors' integer start has it:
      `Multinomial(C, uniform)` counts over C channels, about 37% of them 0.

    Train with `from_logits=True` losses.

    Args:
        name: one of `MODELS`.
        input_shape: image shape. Defaults to `(28, 28, 1)`.
        num_classes: number of outputs. Defaults to `10`.
        discrete: integer kernels (`keras_zim.initializers.Discrete`: the
            paper's rule for dense kernels, one draw per output channel for
            convolution kernels) and zero biases, for ZIM. Defaults to
            `False` (real-valued weights, as `init` says).
        seed: int; the model's weights are a function of it. Defaults to `0`.
        init: the real-valued start (with `discrete=False`): `"keras"`
            (Glorot uniform kernels, zero biases) or `"pytorch"` (PyTorch's
            default: `pytorch_kernel` kernels, dense biases uniform in
            +-1/sqrt(fan_in)). Defaults to `"keras"`.
        conv_draw: `Discrete`'s `draw` for convolution kernels (with
            `discrete=True`): `"unit"` (keras_zim's fix) or `"kernel"` (the
            paper's rule, which leaves most channels all zero; in
            `resnet18` it also draws BatchNorm's scales by the paper's rule).
            Defaults to `"unit"`.
        discrete_base: the base `w0` of the integer kernels:
            `"glorot_uniform"` or `"pytorch"` (each layer's PyTorch start, as
            in the authors' code). Defaults to `"glorot_uniform"`.

    Returns:
        An uncompiled `keras.Model` named `name`.

    Raises:
        ValueError: for an unknown `name`.
    """
    if name not in MODELS:
        raise ValueError(f"Argument `name` must be one of {MODELS}. Received: name={name!r}")
    if init not in INITS:
        raise ValueError(f"Argument `init` must be one of {INITS}. Received: init={init!r}")
    if conv_draw not in _DRAWS:
        raise ValueError(f"Argument `conv_draw` must be one of {_DRAWS}. Received: conv_draw={conv_draw!r}")
    if discrete_base not in ("glorot_uniform", "pytorch"):
        raise ValueError(
            "Argument `discrete_base` must be one of ('glorot_uniform', 'pytorch'). "
            f"Received: discrete_base={discrete_base!r}"
        )
    kernels = _Kernels(discrete, seed, init, conv_draw, discrete_base)
    inputs = keras.Input(input_shape)
    if name in ("linear", "hidden"):
        x = keras.layers.Flatten()(inputs)
        if name == "hidden":
            x = keras.layers.Dense(
                128, activation="relu", kernel_initializer=kernels(), bias_initializer=kernels.bias(x.shape[-1])
            )(x)
    elif name == "paper_conv":
        x = _paper_conv(inputs, kernels)
    elif name == "resnet18":
        x = _resnet18(inputs, kernels)
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
    x = keras.layers.Dense(
        num_classes, kernel_initializer=kernels(), bias_initializer=kernels.bias(x.shape[-1])
    )(x)
    outputs = _paper_norm()(x) if name in ("paper_conv", "resnet18") else _scale_free()(x)
    return keras.Model(inputs, outputs, name=name)


def _batch_norms(layer):
    found = []
    for child in getattr(layer, "layers", []):
        if isinstance(child, keras.layers.BatchNormalization):
            found.append(child)
        else:
            found.extend(_batch_norms(child))
    return found


def calibrate_batch_norm(model, images):
    """Sets BatchNorm's moving statistics to those of `images` under the current weights.

    Runs `images` through `model` once in training mode with every
    `BatchNormalization` layer's momentum set to 0, so each layer's moving
    mean and variance become the statistics of `images` under the current
    weights (each layer sees its inputs normalised as in training), then
    restores the momenta. Other weights are not changed. Call it after
    training (and before each evaluation during training) when the moving
    averages are stale: the "precise BN" of Wu and Johnson (2021).
    Inside `model.fit`, `keras_zim.callbacks.CalibrateBatchNorm(images)`
    calls it before each validation pass and at the end of training.

    Why ZIM needs it: each ZIM step moves a fraction `r` of the weights by a
    whole grid unit. On the resnet with integer kernels (MNIST subset, `r =
    0.05`, after 3 epochs) one step changed the convolution kernels by 6.6%
    (median relative L2 change) against 0.22% for one SGD step at 0.01, and
    moved BatchNorm's input means by up to 0.19 standard deviations (0.07
    for SGD). The moving averages (momentum 0.9, about 10 steps) then mix
    networks that differ: the inference-mode test accuracy was 62% where the
    same weights scored 90% in training mode, and 90% again once the
    statistics were taken from a single batch of 64 training images under the
    final weights. Momentum 0.5 or 0 did not cure it (a one-step-old
    statistic is already off); more trials in the initial kernels
    (`Discrete(trials=16 * fan_in, draw="unit")`) narrowed but did not close
    the gap. With calibration before each evaluation, `keras-zim reproduce
    --model resnet --runs 3 --epochs 3` ended at 89.3% +- 1.3% for ZIM
    against 69.5% +- 18.5% without; SGD's 82.7% became 83.3%
    (docs/reproduce.md).

    The pass runs the whole model in training mode: layers such as Dropout
    are active during it (the models of this module have none).

    Args:
        model: a Keras model; BatchNormalization layers in nested models are
            found too.
        images: a batch of inputs (a few hundred training images), as passed
            to `model(images)`.

    Returns:
        The number of BatchNormalization layers calibrated (0 for a model
        without any; then nothing runs).

    Example:

    >>> model = build_model("conv", discrete=True, seed=0)
    >>> calibrate_batch_norm(model, keras.random.uniform((8, 28, 28, 1), seed=0))
    2

    References:
        Wu and Johnson, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576
        (2021).
    """
    layers = _batch_norms(model)
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)

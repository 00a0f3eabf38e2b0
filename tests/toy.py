"""A tiny classification problem and a small integer-weight model, shared by tests.

Importable by the test files' child scripts too (no pytest, keras imported
only when a model is built).
"""

import numpy as np


def data():
    """64 rows of 6 normal features; the label is the argmax of the first 3."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    return x, (x[:, :3].argmax(1)).astype("int32")


def integer_model():
    """6-8-3 ReLU network with scale-free logits, small integer kernels, zero biases.

    The kernels are drawn by NumPy, not by `Discrete`: its sampler costs an
    XLA compile per kernel shape. Not compiled.
    """
    import keras

    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, "relu"),
            keras.layers.Dense(3),
            keras.layers.LayerNormalization(center=False, scale=False),
        ]
    )
    rng = np.random.default_rng(1)
    model.set_weights([rng.integers(-2, 3, w.shape).astype("float32") if w.ndim > 1 else 0 * w for w in model.get_weights()])
    return model

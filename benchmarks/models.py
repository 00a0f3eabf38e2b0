"""The real models of the benchmarks, built with Keras alone (no TensorFlow import).

`benchmarks/real_models.py` (TensorFlow) and `benchmarks/gpu.py` (JAX, on a machine
without TensorFlow) time optimizers on the trainable variables of these models.
"""

import keras

__all__ = ["MODELS", "resnet50", "transformer"]


def transformer(vocabulary=8000, length=128, width=256, blocks=6):
    """The Transformer encoder of the real-models issue: 99 variables, 6.8M parameters."""
    inputs = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, width)(inputs)
    for _ in range(blocks):
        attention = keras.layers.MultiHeadAttention(8, 32)(x, x)
        x = keras.layers.LayerNormalization()(x + attention)
        hidden = keras.layers.Dense(1024, activation="relu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(width)(hidden))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def resnet50():
    """`keras.applications.ResNet50` without weights: 214 trainable variables, 25.6M parameters."""
    return keras.applications.ResNet50(weights=None)


MODELS = {"transformer": transformer, "resnet50": resnet50}

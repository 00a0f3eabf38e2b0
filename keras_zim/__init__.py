"""keras_zim: discrete-by-design training for Keras with the ZIM update.

`distributions`, `export`, `litert` and `datasets` need TensorFlow: they are
imported on first access, so `import keras_zim` works with JAX or PyTorch alone.
"""

import importlib
from importlib import metadata

from keras_zim import callbacks
from keras_zim import constraints
from keras_zim import initializers
from keras_zim import models
from keras_zim import sampling
from keras_zim.grid import is_integral
from keras_zim.optimizers import ZIM

try:
    __version__ = metadata.version("keras_zim")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "ZIM",
    "callbacks",
    "constraints",
    "distributions",
    "export",
    "initializers",
    "is_integral",
    "litert",
    "sampling",
]

# Submodule -> what it needs beyond Keras.
_NEEDS_TENSORFLOW = {
    "datasets": "TensorFlow",
    "distributions": "TensorFlow and TensorFlow Probability",
    "export": "TensorFlow",
    "litert": "TensorFlow",
}
_TENSORFLOW_PACKAGES = ("tensorflow", "tensorflow_probability", "tensorflow_datasets", "tf_keras")


def __getattr__(name):
    """Imports a TensorFlow-only submodule on first access (PEP 562)."""
    if name not in _NEEDS_TENSORFLOW:
        raise AttributeError(f"module 'keras_zim' has no attribute {name!r}")
    try:
        return importlib.import_module(f"keras_zim.{name}")
    except ImportError as error:
        if (error.name or "").split(".")[0] not in _TENSORFLOW_PACKAGES:
            raise
        raise ImportError(
            f"keras_zim.{name} needs {_NEEDS_TENSORFLOW[name]} ({error.name} is missing). "
            'Install with: pip install "keras_zim[tensorflow]"',
            name=error.name,
        ) from error


def __dir__():
    return sorted(set(globals()) | set(_NEEDS_TENSORFLOW))

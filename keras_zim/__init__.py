"""keras_zim: discrete-by-design training for Keras with the ZIM update."""

from importlib import metadata

from keras_zim import callbacks
from keras_zim import constraints
from keras_zim import distributions
from keras_zim import export
from keras_zim import initializers
from keras_zim import litert
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

"""`import keras_zim` without TensorFlow: JAX or PyTorch alone, in a child process."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child that cannot import TensorFlow (None in sys.modules makes `import` raise
# ImportError), then imports keras_zim.
_BLOCK_TENSORFLOW = """
import sys
for name in ("tensorflow", "tensorflow_probability", "tf_keras", "tensorflow_datasets"):
    sys.modules[name] = None
import keras
import keras_zim
print("backend", keras.backend.backend())
"""

_WITHOUT_TENSORFLOW = _BLOCK_TENSORFLOW + """
import numpy as np
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_constraint=keras_zim.constraints.Ternary())])
model.layers[0].kernel.assign(np.ones((3, 2)))
print("integral", keras_zim.is_integral(model))
print("models", callable(keras_zim.models.build_model), keras_zim.constraints.signed_bits(-8, 7))
print("dir", "export" in dir(keras_zim))
for name in ("distributions", "export", "litert", "datasets"):
    try:
        getattr(keras_zim, name)
    except ImportError as error:
        print("refused", name, "|", error)
    else:
        print("imported", name)
"""


def _child(code, backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT)
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-3000:]
    return child.stdout.splitlines()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_zim_imports_without_tensorflow_and_its_modules_say_what_to_install(backend):
    lines = _child(_WITHOUT_TENSORFLOW, backend)
    assert lines[:4] == [f"backend {backend}", "integral True", "models True 4", "dir True"]
    refused = [line for line in lines if line.startswith("refused")]
    assert [line.split()[1] for line in refused] == ["distributions", "export", "litert", "datasets"]
    for line in refused:
        assert "needs TensorFlow" in line and 'pip install "keras_zim[tensorflow]"' in line
    assert "TensorFlow Probability" in refused[0]


def test_the_command_without_tensorflow_names_it_instead_of_a_traceback():
    code = _BLOCK_TENSORFLOW + "from keras_zim import cli\nsys.exit(cli.main(['reproduce', '--synthetic']))\n"
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 1
    assert "Traceback" not in child.stderr
    assert "keras-zim reproduce: error: keras_zim.datasets needs TensorFlow" in child.stderr
    assert 'pip install "keras_zim[tensorflow]"' in child.stderr


@pytest.mark.parametrize("name", ["distributions", "export", "litert", "datasets"])
def test_with_tensorflow_the_lazy_modules_load_on_access(name):
    import keras_zim

    module = getattr(keras_zim, name)
    assert module.__name__ == f"keras_zim.{name}" and getattr(keras_zim, name) is module


def test_an_unknown_attribute_is_an_attribute_error():
    import keras_zim

    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        keras_zim.nothing

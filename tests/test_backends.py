"""The portable tests (test_portable.py) on JAX and PyTorch, each in a subprocess.

`KERAS_BACKEND` must be set before Keras is imported, so each backend gets its
own interpreter; TensorFlow runs them in this process with the rest of the
suite. Also on JAX: `keras.distribution.DataParallel` over two CPU devices, and
the float32x2 step's compiled program holds no float64 operation.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(backend, *args, env=None):
    environment = dict(os.environ, KERAS_BACKEND=backend, **(env or {}))
    environment["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), HERE, environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, *args], env=environment, cwd=HERE, capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_portable_suite_passes_on(backend):
    result = _run(backend, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", "test_portable.py")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary


def test_jax_data_parallel_replicas_agree_with_one_device():
    result = _run("jax", os.path.join(HERE, "jax_children.py"), "data_parallel",
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "replicas identical: True" in result.stdout
    assert "equal to one device: True" in result.stdout


def test_jax_float32x2_step_has_no_float64():
    result = _run("jax", os.path.join(HERE, "jax_children.py"), "jax_hlo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "f64 ops: 0" in result.stdout
    # The count sees float64 where there is some: the float64 path under x64.
    control = _run("jax", os.path.join(HERE, "jax_children.py"), "jax_hlo", "float64", env={"JAX_ENABLE_X64": "1"})
    assert control.returncode == 0, control.stderr[-3000:]
    assert "f64 ops: 0" not in control.stdout and "f64 ops:" in control.stdout

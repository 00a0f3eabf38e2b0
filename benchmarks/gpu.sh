#!/usr/bin/env bash
# The device command of benchmarks/gpu.py (docs/gpu.md): Keras from the wheels in .whl/
# (../shared/device/keras-wheels.sh), keras_zim from the working tree, the JAX backend.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target .site .whl/*.whl \
  && export PYTHONPATH=$PWD/.site:$PWD KERAS_BACKEND=jax || exit;
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 benchmarks/gpu.py --out "${OUT:-./gpu-results}" "$@"

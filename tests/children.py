"""Child Python processes for tests: started in their own process group, bounded, killed."""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 600  # seconds: generous, for a machine shared with other jobs; still bounded
_XLA_CACHE = []


def _xla_cache():
    """A directory for TensorFlow's persistent XLA cache, shared by this session's children.

    Every child compiles ZIM's sampler for the same few shapes; with the cache
    a compile (about 5 s of CPU) happens once, later children load it (about
    1 s). Removed when this process exits.
    """
    if not _XLA_CACHE:
        _XLA_CACHE.append(tempfile.mkdtemp(prefix="keras_zim_xla_cache_"))
        atexit.register(shutil.rmtree, _XLA_CACHE[0], True)
    return _XLA_CACHE[0]


def start(script, *args):
    """Runs `python script *args` in a new process group, output to a temporary file."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    flags = env.get("TF_XLA_FLAGS", "") + f" --tf_xla_persistent_cache_directory={_xla_cache()}"
    env["TF_XLA_FLAGS"] = flags.strip()
    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks
    process = subprocess.Popen(
        [sys.executable, script, *map(str, args)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, killed as a whole
    )
    process.log = log
    return process


def output(process):
    """The last 3000 characters the child wrote."""
    process.log.seek(0)
    return process.log.read().decode(errors="replace")[-3000:]


def kill(process):
    """SIGKILLs the child's process group (if it still runs) and reaps it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def finish(processes, timeout=TIMEOUT):
    """Waits for every child; kills them all on timeout or error; asserts exit 0."""
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            kill(process)
    for process in processes:
        assert process.returncode == 0, output(process)


def wait_for(path, process, timeout=TIMEOUT):
    """Polls until `path` exists; fails (killing `process`) on timeout or early exit."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            kill(process)
            raise AssertionError(f"{path} never appeared (exit {process.returncode}):\n{output(process)}")
        time.sleep(0.2)


def free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()

"""Fixtures of the shmem pytest suite: unique names, a check that nothing is left in /dev/shm,
and a helper that runs Python code in another process with a deadline."""

import itertools
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

import shmem

SHM = Path("/dev/shm")
#: The deadline of any child process: generous, since it only bounds a test that hangs.
DEADLINE = 60.0
_counter = itertools.count()


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skips locally; fails under CI, where every tool a test needs must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def files_of(name: str, directory: Path = SHM) -> List[str]:
    return sorted(p.name for p in directory.glob(f"shmem.{name}*"))


@pytest.fixture
def name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A segment name no other test (or parallel run) uses; the test fails if anything named
    after it is left in /dev/shm, and the leftovers are removed."""
    test = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:60]
    n = f"pytest-{test}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"
    yield n
    left = files_of(n)
    for f in left:
        try:
            shmem.unlink(f[len("shmem."):], force=True)
        except (FileNotFoundError, shmem.Error):
            os.unlink(SHM / f)
    assert not left, f"left in /dev/shm: {left}"


#: Where a value's `sleepers` flag sits in its file (the header, then version u64, wake u32).
WAITERS_OFFSET = 64 + 8 + 4


def sleepers(name: str) -> int:
    """Whether a thread (in any process) may sleep in a wait on value `name`: its sleepers flag,
    read from its file (so the value must be persistent, whose file is its memory)."""
    with open(SHM / f"shmem.{name}", "rb") as f:
        f.seek(WAITERS_OFFSET)
        return int.from_bytes(f.read(4), sys.byteorder)


def until(condition, what: str) -> None:
    """Waits for `condition()` (polled by this test, not by the library), DEADLINE at most."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def python(code: str, *args: str, env: Optional[dict] = None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `code` (dedented) in a new interpreter with `args` as sys.argv[1:]."""
    # -W default: warnings (a ResourceWarning at exit, say) reach stderr, where tests look.
    full_env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="default")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"child exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def spawn(code: str, *args: str) -> subprocess.Popen:
    """Starts `code` in a new interpreter, with pipes for its output (text)."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )

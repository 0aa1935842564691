"""Read-only values (`Value.open(name, readonly=True)`): they read what a writer stores, every
write is a PermissionError naming the value, and their waits are woken by another process's
`set` on a value created with a read-without-write mode."""

import pickle
from pathlib import Path

import pytest

import shmem

from conftest import DEADLINE, spawn, until


def test_a_read_only_value_reads_and_refuses_writes(name):
    with shmem.Value(name, 64, mode=0o644) as writer:
        writer.set(b"hello")
        with shmem.Value.open(name, readonly=True) as reader:
            assert reader.readonly and not writer.readonly
            assert reader.get_versioned() == (1, b"hello")
            with pytest.raises(PermissionError) as e:
                reader.set(b"forged")
            assert name in str(e.value) and "read-only" in str(e.value)
            assert reader.get_versioned() == (1, b"hello")
            # A pickled read-only handle comes back read-only.
            again = pickle.loads(pickle.dumps(reader))
            assert again.readonly and again.get_versioned() == (1, b"hello")
            again.close()
    with pytest.raises(FileNotFoundError):
        shmem.Value.open(name, readonly=True)


def _sleeps_in_futex_waitv(pid: int) -> bool:
    """Whether a thread of `pid` sleeps in futex_waitv (syscall 449 on x86-64 and aarch64)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "syscall").read_text().split()[0] == "449":
                return True
        except (OSError, IndexError):
            pass
    return False


def test_a_read_only_waiter_in_another_process_is_woken_by_a_set(name):
    with shmem.Value(name, 64, mode=0o644) as writer:
        child = spawn(
            """
            import sys, shmem
            with shmem.Value.open(sys.argv[1], readonly=True) as v:
                print("waiting", flush=True)
                print("changed", v.wait(0, timeout=60), v.get().decode(), flush=True)
            """,
            name,
        )
        try:
            assert child.stdout.readline() == "waiting\n"
            until(lambda: _sleeps_in_futex_waitv(child.pid), "the child sleeps in futex_waitv")
            writer.set(b"woken")
            out, err = child.communicate(timeout=DEADLINE)
            assert child.returncode == 0, err
            assert out == "changed 1 woken\n"
        finally:
            child.kill()
            child.wait()
        with shmem.Value.open(name, readonly=True) as reader:
            with pytest.raises(TimeoutError):
                reader.wait(1, timeout=0.05)


def test_a_read_only_wait_on_an_owner_only_value_is_refused(name):
    with shmem.Value(name, 64) as writer, shmem.Value.open(name, readonly=True) as reader:
        with pytest.raises(PermissionError) as e:
            reader.wait(0, timeout=5)
        assert name in str(e.value)
        writer.set(b"x")

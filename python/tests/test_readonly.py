"""Read-only values and maps (`Value.open(name, readonly=True)`, `Map.open(name,
readonly=True)`): they read what a writer stores, every write is a PermissionError naming the
segment, and their waits are woken by another process's `set` (or `delete`) on a segment
created with a read-without-write mode."""

import asyncio
import pickle
from pathlib import Path

import pytest

import shmem

from conftest import DEADLINE, python, spawn, until


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


# ---- maps ----


def test_a_read_only_map_reads_and_refuses_writes(name):
    with shmem.Map(name, 4096, mode=0o644) as writer:
        writer["a"] = b"one"
        writer.set(b"\xff", b"two")
        with shmem.Map.open(name, readonly=True) as reader:
            assert reader.readonly and not writer.readonly
            assert not reader.created and reader.capacity == writer.capacity
            state = (2, [("a", b"one"), (b"\xff", b"two")])
            assert (reader.version, reader.items()) == state
            assert reader["a"] == b"one" and reader.get(b"\xff") == b"two"
            assert reader.get_versioned("a") == (1, b"one")
            assert "a" in reader and "b" not in reader and len(reader) == 2
            assert list(reader) == reader.keys() == ["a", b"\xff"]
            writes = [
                lambda: reader.set("a", b"forged"),
                lambda: reader.set("new", b"forged"),
                lambda: reader.__setitem__("a", b"forged"),
                lambda: reader.delete("a"),
                lambda: reader.delete("absent"),  # refused too, not a quiet False
                lambda: reader.__delitem__("a"),
                lambda: reader.__delitem__("absent"),  # PermissionError, not KeyError
            ]
            for write in writes:
                with pytest.raises(PermissionError) as e:
                    write()
                assert name in str(e.value) and "read-only" in str(e.value)
            # Nothing changed, as either handle sees it, and the writer still writes.
            assert (reader.version, reader.items()) == state
            assert (writer.version, writer.items()) == state
            assert writer.set("a", b"three") == 3 and reader["a"] == b"three"
    with pytest.raises(FileNotFoundError):
        shmem.Map.open(name, readonly=True)


def test_a_pickled_map_reopens_with_its_access(name):
    with shmem.Map(name, 4096, mode=0o644) as writer:
        writer["k"] = b"v"
        with shmem.Map.open(name, readonly=True) as reader:
            with pickle.loads(pickle.dumps(reader)) as again:
                assert again.readonly and again.name == name and again["k"] == b"v"
                with pytest.raises(PermissionError):
                    again["k"] = b"forged"
            # In another process too: the child unpickles it read-only, its write is refused.
            out = python(
                """
                import pickle, sys, shmem
                m = pickle.loads(bytes.fromhex(sys.argv[1]))
                try:
                    m["k"] = b"forged"
                except PermissionError:
                    print(m.readonly, m["k"], m.version)
                m.close()
                """,
                pickle.dumps(reader).hex(),
            ).stdout
            assert out == "True b'v' 1\n"
            assert writer.items() == [("k", b"v")]
        # A read-write handle pickles read-write.
        data = pickle.dumps(writer)
        with pickle.loads(data) as rw:
            assert not rw.readonly and not rw.created
            assert rw.set("k", b"w") == 2 and writer["k"] == b"w"
    with pytest.raises(ValueError, match="is closed"):
        pickle.dumps(writer)
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)  # nobody holds it any more: gone, not recreated


def test_read_only_map_waiters_in_another_process_are_woken(name):
    # One child, three read-only waits in turn: on a key (woken first by a set of another key,
    # which it must sleep through, then by its own), on any key with `watch` (woken by a
    # delete), and `changed` from asyncio (woken by a set).
    with shmem.Map(name, 4096, mode=0o644) as writer:
        child = spawn(
            """
            import asyncio, sys, shmem
            with shmem.Map.open(sys.argv[1], readonly=True) as m:
                print("waiting key", flush=True)
                v = m.wait("k", 0, timeout=60)
                print("key", v, m["k"].decode(), flush=True)
                w = m.watch(timeout=60)
                print("waiting watch", flush=True)
                print("watch", next(w), len(m), flush=True)
                since = m.version
                print("waiting changed", flush=True)
                print("changed", asyncio.run(m.changed(since, timeout=60)), flush=True)
            """,
            name,
        )
        try:
            assert child.stdout.readline() == "waiting key\n"
            until(lambda: _sleeps_in_futex_waitv(child.pid), "the child sleeps in futex_waitv")
            assert writer.set("other", b"x") == 1  # wakes it; not its key: it sleeps again
            writer.set("k", b"woken")
            assert child.stdout.readline() == "key 2 woken\n"

            assert child.stdout.readline() == "waiting watch\n"
            until(lambda: _sleeps_in_futex_waitv(child.pid), "the child sleeps in futex_waitv")
            assert writer.delete("other")
            assert child.stdout.readline() == "watch 3 1\n"

            assert child.stdout.readline() == "waiting changed\n"
            until(lambda: _sleeps_in_futex_waitv(child.pid), "the child sleeps in futex_waitv")
            writer.set("k", b"again")
            out, err = child.communicate(timeout=DEADLINE)
            assert child.returncode == 0, err
            assert out == "changed 4\n"
        finally:
            child.kill()
            child.wait()
        with shmem.Map.open(name, readonly=True) as reader:
            with pytest.raises(TimeoutError):
                reader.wait(None, 4, timeout=0.05)
            with pytest.raises(TimeoutError):
                reader.wait("k", 4, timeout=0.05)


def test_read_only_waits_on_an_owner_only_map_are_refused(name):
    with shmem.Map(name, 4096) as writer, shmem.Map.open(name, readonly=True) as reader:
        writer["k"] = b"v"
        refused = [
            lambda: reader.wait(None, 1, timeout=5),
            lambda: reader.wait("k", 1, timeout=5),
            lambda: next(reader.watch(timeout=5)),
            lambda: next(reader.watch("k", timeout=5)),
            lambda: asyncio.run(reader.changed(1, timeout=5)),
        ]
        for wait in refused:
            with pytest.raises(PermissionError) as e:
                wait()
            assert name in str(e.value)
        # A change that is already there needs no sleep, so it is no refusal.
        assert reader.wait(None, 0, timeout=5) == 1
        assert reader.wait("k", 0, timeout=5) == 1
        writer["k"] = b"w"
        assert reader["k"] == b"w"

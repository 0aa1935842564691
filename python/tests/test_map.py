"""Map: the mapping protocol, a full map, waits woken by another process, timeouts, close."""

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import shmem
from conftest import DEADLINE, files_of, python, spawn


def test_the_mapping_protocol(name):
    with shmem.Map(name, 4096) as m:
        assert m.created and len(m) == 0 and m.version == 0
        m["a"] = b"1"
        m[b"b"] = "two"
        assert m.set("c", bytearray(b"3")) == 3
        assert m["a"] == b"1" and m["b"] == b"two" and m[b"c"] == b"3"
        assert "a" in m and b"a" in m and "z" not in m
        assert len(m) == 3
        assert list(m) == ["a", "b", "c"]
        assert m.keys() == ["a", "b", "c"]
        assert m.items() == [("a", b"1"), ("b", b"two"), ("c", b"3")]
        assert m.get("z") is None and m.get("z", b"d") == b"d"
        assert m.get_versioned("b") == (2, b"two")
        del m["a"]
        assert "a" not in m and m.version == 4
        with pytest.raises(KeyError):
            del m["a"]
        with pytest.raises(KeyError):
            m["a"]
        assert m.delete("b") is True and m.delete("b") is False
        m[b"\xff\x00"] = b"bytes key"
        assert b"\xff\x00" in list(m)


def test_bad_keys_and_values_are_refused_clearly(name):
    with shmem.Map(name, 4096) as m:
        with pytest.raises(ValueError, match="empty"):
            m[""] = b"x"
        with pytest.raises(ValueError, match="255"):
            m["k" * 256] = b"x"
        m["k" * 255] = b"long key"
        assert m["k" * 255] == b"long key"
        with pytest.raises(TypeError):
            m[3] = b"x"
        with pytest.raises(ValueError):
            m["big"] = b"x" * 5000


def test_a_full_map_raises_and_changes_nothing(name):
    with shmem.Map(name, 4096) as m:
        i = 0
        with pytest.raises(shmem.Error, match="full"):
            while True:
                m[f"k{i}"] = b"v" * 100
                i += 1
        before = (m.version, m.items())
        with pytest.raises(shmem.Error, match="full"):
            m["one-more"] = b"v" * 100
        assert (m.version, m.items()) == before
        del m["k0"]
        m["one-more"] = b"v" * 100


def test_another_process_sees_and_changes_the_map(name):
    with shmem.Map(name, 4096) as m:
        m["greeting"] = b"from the parent"
        out = python(
            """
            import sys, shmem
            with shmem.Map.open(sys.argv[1]) as m:
                print(m["greeting"].decode(), len(m))
                m["reply"] = "from the child"
            """,
            name,
        ).stdout
        assert out == "from the parent 1\n"
        assert m["reply"] == b"from the child"


def test_waits_on_one_key_and_any_key_are_woken_by_another_process(name):
    with shmem.Map(name, 4096) as m:
        result = {}

        def wait_key():
            result["key"] = m.wait("key", since=0, timeout=60)

        t = threading.Thread(target=wait_key)
        t.start()
        # A change of another key wakes the any-key wait, not the wait on "key".
        child = spawn(
            """
            import sys, shmem
            with shmem.Map.open(sys.argv[1]) as m:
                m["other"] = b"x"
                m["key"] = b"y"
            """,
            name,
        )
        assert m.wait(None, since=0, timeout=60) >= 1
        t.join(60)
        assert result["key"] == m.get_versioned("key")[0] == 2
        child.wait(60)
        assert child.returncode == 0, child.stderr.read()


def test_waits_time_out_and_watch_yields_each_change(name):
    with shmem.Map(name, 4096) as m:
        with pytest.raises(TimeoutError):
            m.wait("k", since=0, timeout=0.02)
        with pytest.raises(TimeoutError):
            m.wait(since=m.version, timeout=0.02)
        w = m.watch("k", timeout=10)
        m["k"] = b"1"
        assert next(w) == 1
        m["other"] = b"2"
        m["k"] = b"3"
        assert next(w) == 3
        assert asyncio.run(m.changed(0)) == 3


def test_close_ends_a_wait_and_later_calls_raise(name):
    m = shmem.Map(name, 4096)
    errors = []

    def waiter():
        try:
            m.wait("never", since=0)
        except ValueError as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    m.close()
    t.join(60)
    assert errors and "closed" in str(errors[0])
    with pytest.raises(ValueError, match="closed"):
        len(m)
    assert m.closed


def test_the_map_example_runs(name):
    """examples/python/map_watch.py: a wait on one key across two processes, then the
    entries of one version in key order; nothing is left behind."""
    example = Path(__file__).resolve().parents[2] / "examples" / "python" / "map_watch.py"
    proc = subprocess.run(
        [sys.executable, str(example), name],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "parent: two workers stored, map version 2",
        "child: job set at version 3: go",
        "child:   job = go",
        "child:   worker/1 = idle",
        "child:   worker/2 = busy",
        "parent: the child says: seen 3 keys",
    ], proc.stdout
    assert files_of(name) == []


def test_values_around_the_lookup_buffer_read_back_whole(name):
    """`m[key]`, `get` and `get_versioned` copy values of up to 256 bytes through a buffer on
    the stack and longer ones through another path: both give the value exactly."""
    with shmem.Map(name, 64 * 1024) as m:
        for n in [0, 1, 255, 256, 257, 1000, 4096]:
            data = bytes((i * 7 + n) % 251 for i in range(n))
            version = m.set(f"k{n}", data)
            assert m[f"k{n}"] == data, n
            assert m.get(f"k{n}") == data, n
            assert m.get_versioned(f"k{n}") == (version, data), n
            assert f"k{n}" in m and f"k{n}".encode() in m
        assert "absent" not in m and m.get("absent", b"-") == b"-"

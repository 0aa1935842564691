"""Value in one process: contents, versions, arguments, closing."""

import os
import stat

import pytest

import shmem
from conftest import SHM, files_of


def test_create_set_get_and_versions(name):
    with shmem.Value(name, capacity=100) as v:
        assert v.created
        assert v.name == name
        assert v.capacity == 128  # rounded up to 64
        assert (v.version, v.get()) == (0, b"")
        assert v.set(b"bytes") == 1
        assert v.get() == b"bytes"
        assert v.set("héllo ✓") == 2  # a str is stored as UTF-8
        assert v.get() == "héllo ✓".encode()
        assert v.get_str() == "héllo ✓"
        assert v.get_versioned() == (2, "héllo ✓".encode())
        assert v.set(bytearray(b"ba")) == 3
        assert v.set(memoryview(b"xmv")[1:]) == 4
        assert v.get() == b"mv"
        assert v.set(b"") == 5 and v.get() == b""
        assert v.set(b"x" * 128) == 6 and v.get() == b"x" * 128
        assert not v.persistent
        assert repr(v) == f"<shmem.Value '{name}' capacity=128 version=6>"
    assert files_of(name) == []  # the last user closed it: gone


def test_a_second_handle_sees_the_same_value(name):
    with shmem.Value(name, 64) as a, shmem.Value(name, 64) as b, shmem.Value.open(name) as c:
        assert a.created and not b.created and not c.created
        a.set(b"one")
        assert b.get() == c.get() == b"one"
        assert c.capacity == 64
        c.set(b"two")
        assert a.get_versioned() == (2, b"two")
        assert files_of(name) == [f"shmem.{name}"]


def test_large_values_round_trip(name):
    data = os.urandom(1 << 20)
    with shmem.Value(name, len(data)) as v:
        v.set(data)
        assert v.get() == data
        v.set(b"short again")
        assert v.get() == b"short again"


def test_get_str_decoding(name):
    with shmem.Value(name, 64) as v:
        v.set(b"\xff ok")
        with pytest.raises(UnicodeDecodeError):
            v.get_str()
        assert v.get_str(errors="replace") == "\ufffd ok"


def test_a_value_too_large_is_refused_and_changes_nothing(name):
    with shmem.Value(name, 64) as v:
        v.set(b"kept")
        with pytest.raises(ValueError, match=f"65 bytes does not fit segment '{name}'"):
            v.set(b"x" * 65)
        assert v.get_versioned() == (1, b"kept")


def test_set_refuses_what_is_not_bytes(name):
    with shmem.Value(name, 64) as v:
        with pytest.raises(TypeError, match="not int"):
            v.set(5)
        with pytest.raises(TypeError):
            v.set(None)
        assert v.version == 0


def test_open_existing_only(name):
    with pytest.raises(FileNotFoundError, match=f"segment '{name}' not found") as e:
        shmem.Value.open(name)
    assert e.value.errno == 2 and e.value.filename == f"/dev/shm/shmem.{name}"
    assert files_of(name) == []


def test_create_refuses_a_live_value(name):
    with shmem.Value.create(name, 64) as v:
        assert v.created
        with pytest.raises(FileExistsError, match=f"'{name}' already exists") as e:
            shmem.Value.create(name, 64)
        assert e.value.errno == 17
    with shmem.Value.create(name, 64):  # the name is free again
        pass


def test_an_existing_value_too_small_is_refused(name):
    with shmem.Value(name, 64):
        with pytest.raises(ValueError, match="holds at most 64 bytes, less than the 1000"):
            shmem.Value(name, 1000)
        with pytest.raises(ValueError):
            shmem.Value.open(name, 1000)


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 300, "sp ace"])
def test_invalid_names(bad):
    with pytest.raises(ValueError, match="invalid segment name"):
        shmem.Value(bad, 64)
    with pytest.raises(ValueError, match="invalid segment name"):
        shmem.Segment(bad, 64)


def test_invalid_sizes_modes_and_timeouts(name):
    with pytest.raises(ValueError, match="-1 is negative"):
        shmem.Value(name, -1)
    with pytest.raises(ValueError, match="too large"):
        shmem.Value(name, 1 << 70)
    with pytest.raises(ValueError, match="too large"):
        shmem.Value(name, 1 << 45)
    with pytest.raises(TypeError, match="must be an int"):
        shmem.Value(name, "64")
    with pytest.raises(ValueError, match="invalid mode"):
        shmem.Value(name, 64, mode=0o1777)
    with shmem.Value(name, 64) as v:
        with pytest.raises(ValueError, match="invalid timeout"):
            v.wait(0, timeout=-1)
        with pytest.raises(ValueError, match="invalid timeout"):
            v.wait(0, timeout=float("nan"))
    assert files_of(name) == []


def test_mode_and_persistence(name):
    v = shmem.Value(name, 64, persistent=True, mode=0o640)
    assert v.persistent
    assert stat.S_IMODE(os.stat(SHM / f"shmem.{name}").st_mode) == 0o640
    v.set(b"stays")
    v.close()
    assert files_of(name) == [f"shmem.{name}"]  # persistent: outlives its users
    with shmem.Value.open(name) as again:
        assert not again.created and again.get() == b"stays"
        with pytest.raises(shmem.Error, match="busy"):
            shmem.unlink(name)  # still in use
    shmem.unlink(name)
    assert files_of(name) == []
    with pytest.raises(FileNotFoundError):
        shmem.unlink(name)


def test_unlink_force_takes_the_name_from_live_users(name):
    with shmem.Value(name, 64) as old:
        old.set(b"old")
        shmem.unlink(name, force=True)
        assert files_of(name) == []
        with shmem.Value(name, 64) as new:
            assert new.created and new.get() == b""
            assert old.get() == b"old"  # the old users keep their memory


def test_a_private_directory(name):
    directory = SHM / f"{name}-dir"
    directory.mkdir()
    try:
        with shmem.Value(name, 64, dir=str(directory)) as v:
            v.set(b"x")
            assert files_of(name, directory) == [f"shmem.{name}"]
            assert files_of(name) == []
            with shmem.Value.open(name, dir=directory) as w:
                assert w.get() == b"x"
        assert files_of(name, directory) == []
    finally:
        directory.rmdir()


def test_every_use_after_close_is_a_value_error(name):
    v = shmem.Value(name, 64)
    v.close()
    v.close()  # idempotent
    assert v.closed and repr(v) == f"<shmem.Value '{name}' closed>"
    assert v.name == name
    for use in [
        lambda: v.get(),
        lambda: v.get_str(),
        lambda: v.get_versioned(),
        lambda: v.set(b"x"),
        lambda: v.version,
        lambda: v.capacity,
        lambda: v.created,
        lambda: v.persistent,
        lambda: v.wait(0),
        lambda: v.watch(),
        lambda: v.changed(0),
    ]:
        with pytest.raises(ValueError, match=f"value '{name}' is closed"):
            use()
    assert files_of(name) == []


def test_a_raw_segment_is_not_a_value(name):
    with shmem.Segment(name, 4096):
        with pytest.raises(shmem.Error, match="incompatible") as e:
            shmem.Value.open(name)
        assert not isinstance(e.value, shmem.CorruptError)


def test_a_scribbled_value_is_corrupt_not_a_hang(name):
    import mmap
    import struct

    # Persistent: its memory is the file mapped below.
    with shmem.Value(name, 64, persistent=True) as v:
        v.set(b"one")  # version 1 lives in slot 1, whose meta starts at byte 192
        with open(SHM / f"shmem.{name}", "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            (seq,) = struct.unpack_from("<Q", m, 192)
            struct.pack_into("<Q", m, 192, seq + 1)  # odd: a writer that never finishes
            with pytest.raises(shmem.CorruptError, match=f"segment '{name}' is corrupt"):
                v.get()
            assert issubclass(shmem.CorruptError, shmem.Error)
            struct.pack_into("<Q", m, 192, seq)
        assert v.get() == b"one"
    shmem.unlink(name)


def test_garbage_collection_detaches(name):
    import gc

    v = shmem.Value(name, 64)
    cycle = [v]
    cycle.append(cycle)
    del v, cycle
    gc.collect()
    assert files_of(name) == []


def test_permission_error_for_another_users_segment(name):
    if os.geteuid() != 0:
        from conftest import skip_or_fail

        skip_or_fail("giving a segment to another user needs root")
    with shmem.Value(name, 64, mode=0o666) as mine:
        os.chown(SHM / f"shmem.{name}", 12345, -1)
        with pytest.raises(PermissionError, match=f"permission denied for segment '{name}'"):
            shmem.Value(name, 64)
        mine.set(b"still mine")
        os.chown(SHM / f"shmem.{name}", 0, -1)

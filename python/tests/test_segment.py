"""Segment: raw shared bytes, buffer views (numpy too), closing with live views."""

import gc

import pytest

import shmem
from conftest import files_of, python, skip_or_fail


def test_zero_filled_shared_bytes(name):
    with shmem.Segment(name, 4096) as seg, shmem.Segment.open(name) as other:
        assert seg.created and not other.created
        assert seg.size == other.size == 4096 and not seg.persistent
        assert seg.read() == bytes(4096)
        seg.write(b"hello", 100)
        assert other.read(100, 5) == b"hello"
        other.write(bytearray(b"!"), 4095)
        assert seg.read(4095) == b"!"
        assert repr(seg) == f"<shmem.Segment '{name}' size=4096>"
    assert files_of(name) == []


def test_out_of_range_and_bad_arguments(name):
    with shmem.Segment(name, 64) as seg:
        with pytest.raises(ValueError, match="outside the 64 data bytes"):
            seg.write(b"xx", 63)
        with pytest.raises(ValueError, match="outside"):
            seg.read(60, 10)
        with pytest.raises(TypeError):
            seg.write(7)
        with pytest.raises(ValueError, match="invalid offset for segment .* -1 is negative"):
            seg.read(-1)
        with pytest.raises(ValueError, match="invalid length"):
            seg.read(0, -3)
        with pytest.raises(ValueError, match="invalid offset"):
            seg.write(b"x", -1)
    with pytest.raises(ValueError, match=f"invalid size for segment '{name}'"):
        shmem.Segment.create(name, 0)
    with pytest.raises(ValueError, match="negative"):
        shmem.Segment(name, -5)
    with pytest.raises(FileNotFoundError):
        shmem.Segment.open(name)
    with shmem.Segment.create(name, 64):
        with pytest.raises(FileExistsError):
            shmem.Segment.create(name, 64)
        with pytest.raises(ValueError):
            shmem.Segment.open(name, 128)  # smaller than asked for


def test_buf_is_a_writable_view_shared_with_another_process(name):
    with shmem.Segment(name, 1 << 16) as seg:
        buf = seg.buf
        assert isinstance(buf, memoryview)
        assert (buf.format, buf.itemsize, buf.nbytes, buf.readonly) == ("B", 1, 1 << 16, False)
        buf[0:5] = b"hello"
        out = python(
            """
            import sys, shmem
            with shmem.Segment.open(sys.argv[1]) as seg:
                b = seg.buf
                print(bytes(b[0:5]).decode())
                b[100:103] = b"abc"
                del b
            """,
            name,
        ).stdout
        assert out == "hello\n"
        assert bytes(buf[100:103]) == b"abc"
        assert seg.read(100, 3) == b"abc"
        del buf


def test_closing_with_live_views_keeps_the_mapping_until_the_last_view_goes(name):
    seg = shmem.Segment(name, 4096)
    view = seg.buf
    part = view[8:16]
    view[8] = 42
    seg.close()
    assert seg.closed
    with pytest.raises(ValueError, match=f"segment '{name}' is closed"):
        seg.buf
    with pytest.raises(ValueError):
        seg.read()
    assert part[0] == 42  # still mapped, still shared
    part[1] = 7
    with shmem.Segment.open(name) as other:
        assert other.read(8, 2) == bytes([42, 7])
    del view
    gc.collect()
    assert files_of(name) == [f"shmem.{name}"]  # `part` still holds the mapping
    del part
    gc.collect()
    assert files_of(name) == []


def test_garbage_collection_detaches(name):
    seg = shmem.Segment(name, 4096)
    view = seg.buf
    cycle = [seg, view]
    cycle.append(cycle)
    del seg, view, cycle
    gc.collect()
    assert files_of(name) == []


def test_a_released_view_does_not_hold_the_mapping(name):
    seg = shmem.Segment(name, 4096)
    with seg.buf as view:
        view[0] = 1
    seg.close()
    assert files_of(name) == []


def _numpy():
    try:
        import numpy
    except ImportError:
        skip_or_fail("numpy is not installed")
    return numpy


def test_numpy_views_across_processes(name):
    np = _numpy()
    with shmem.Segment(name, 1 << 20) as seg:
        a = np.frombuffer(seg.buf, dtype=np.float32)
        assert a.shape == (1 << 18,) and a.flags.writeable and not a.any()
        a[:4] = [1.5, 2.5, 3.5, 4.5]
        out = python(
            """
            import sys, numpy as np, shmem
            with shmem.Segment.open(sys.argv[1]) as seg:
                b = np.frombuffer(seg.buf, dtype=np.float32)
                print(b[:4].tolist())
                b[4:8] = b[:4] * 2
                del b
            """,
            name,
        ).stdout
        assert out == "[1.5, 2.5, 3.5, 4.5]\n"
        assert a[4:8].tolist() == [3.0, 5.0, 7.0, 9.0]
        m = np.ndarray((512, 512), dtype=np.float32, buffer=seg.buf)  # 2-D over the same bytes
        assert m[0, 5] == 5.0
        del a, m


def test_numpy_array_outlives_close_then_detaches(name):
    np = _numpy()
    seg = shmem.Segment(name, 4096)
    a = np.frombuffer(seg.buf, dtype=np.uint64)
    seg.close()
    a[0] = 123  # still mapped
    with shmem.Segment.open(name) as other:
        assert int(np.frombuffer(other.read(0, 8), dtype=np.uint64)[0]) == 123
    del a
    gc.collect()
    assert files_of(name) == []


def test_interpreter_exit_with_a_numpy_view_leaves_nothing(name):
    _numpy()
    proc = python(
        """
        import sys, numpy as np, shmem
        seg = shmem.Segment(sys.argv[1], 4096)
        array = np.frombuffer(seg.buf, dtype=np.int32)
        array[:] = 7
        print("exiting with a view open")
        """,
        name,
    )
    assert proc.stderr == ""  # no warning, no "Exception ignored"
    assert files_of(name) == []

"""Value across real processes: subprocess, multiprocessing (spawn and fork), signals, exit."""

import multiprocessing
import os
import signal
import sys

import pytest

import shmem
from conftest import DEADLINE, files_of, python, spawn


def test_another_process_reads_and_writes(name):
    with shmem.Value(name, 4096) as v:
        v.set(b"from the parent")
        out = python(
            """
            import sys, shmem
            with shmem.Value.open(sys.argv[1]) as v:
                print(v.get().decode())
                v.set("from the child")
            """,
            name,
        ).stdout
        assert out == "from the parent\n"
        assert v.get_versioned() == (2, b"from the child")


def test_a_wait_is_woken_by_another_process(name):
    # Persistent: its memory is its file, where the child reads the sleepers flag (a transient
    # value's memory is SysV shared memory, and its file only the 64-byte name).
    with shmem.Value(name, 64, persistent=True) as v:
        since = v.version
        # The child sets only once this process sleeps in the wait (it reads the counter of
        # sleepers from the file), so the wake-up path is the one tested.
        child = spawn(
            """
            import sys, time, shmem
            path, deadline = "/dev/shm/shmem." + sys.argv[1], time.monotonic() + 60
            with shmem.Value.open(sys.argv[1]) as v, open(path, "rb") as f:
                def sleepers():
                    f.seek(76)  # the value's `waiters` counter
                    return int.from_bytes(f.read(4), sys.byteorder)
                while sleepers() == 0:
                    assert time.monotonic() < deadline, "the parent never slept"
                    time.sleep(0.001)
                v.set(b"woken")
            """,
            name,
        )
        try:
            assert v.wait(since, timeout=DEADLINE) == since + 1
            assert v.get() == b"woken"
        finally:
            assert child.wait(DEADLINE) == 0, child.stderr.read()
    shmem.unlink(name)


def test_watch_sees_every_change_of_another_process(name):
    with shmem.Value(name, 64) as v, shmem.Value(name + "-ack", 64) as ack:
        child = spawn(
            """
            import sys, shmem
            with shmem.Value.open(sys.argv[1]) as v, shmem.Value.open(sys.argv[1] + "-ack") as ack:
                for i in range(5):
                    v.set(f"change {i}")
                    ack.wait(i, timeout=60)  # one change at a time, so none merge
                v.set("last")
            """,
            name,
        )
        seen = []
        for version, data in v.watch(timeout=DEADLINE):
            seen.append((version, data))
            if data == b"last":
                break
            ack.set(b"next")
        assert child.wait(DEADLINE) == 0, child.stderr.read()
    assert seen == [(i + 1, f"change {i}".encode()) for i in range(5)] + [(6, b"last")]


def test_watch_merges_fast_changes_into_the_latest(name):
    with shmem.Value(name, 64) as v:
        it = v.watch()
        for i in range(10):
            v.set(str(i))
        assert next(it) == (10, b"9")
        with pytest.raises(TimeoutError):
            next(v.watch(timeout=0.01))


def test_a_timeout_is_a_timeout_error(name):
    with shmem.Value(name, 64) as v:
        v.set(b"x")
        with pytest.raises(TimeoutError, match=f"change of value '{name}' \\(still at version 1\\)") as e:
            v.wait(1, timeout=0.05)
        assert e.value.errno == 110 and isinstance(e.value, OSError)
        assert v.wait(0, timeout=0) == 1  # already changed: returns at once
        with pytest.raises(TimeoutError):
            v.wait(1, timeout=0)


def test_a_wait_releases_the_gil_while_it_sleeps(name):
    import threading

    from conftest import sleepers, until

    with shmem.Value(name, 64, persistent=True) as v:  # its file is its memory: see sleepers()
        got = []
        t = threading.Thread(target=lambda: got.append(v.wait(0, timeout=DEADLINE)))
        t.start()
        # This thread runs Python code (needs the GIL) while the other one sleeps in the wait.
        until(lambda: sleepers(name) == 1, "the thread to sleep in wait()")
        assert t.is_alive() and got == []
        v.set(b"go")
        t.join(DEADLINE)
        assert got == [1]
        assert sleepers(name) == 0
    shmem.unlink(name)


def test_closing_from_another_thread_ends_a_wait(name):
    import threading

    v = shmem.Value(name, 64)
    errors = []

    def waiter():
        try:
            v.wait(0)
        except ValueError as e:
            errors.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    v.close()
    t.join(DEADLINE)
    assert not t.is_alive()
    assert len(errors) == 1 and "is closed" in str(errors[0])
    assert files_of(name) == []


def test_ctrl_c_interrupts_a_wait(name):
    child = spawn(
        """
        import sys, shmem
        v = shmem.Value(sys.argv[1], 64)
        print("waiting", flush=True)
        v.wait(0)
        """,
        name,
    )
    try:
        assert child.stdout.readline() == "waiting\n"
        child.send_signal(signal.SIGINT)
        assert child.wait(DEADLINE) != 0
        assert "KeyboardInterrupt" in child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert files_of(name) == []


def test_interpreter_exit_with_open_handles_leaves_nothing(name):
    proc = python(
        """
        import sys, threading, shmem
        name = sys.argv[1]
        kept = shmem.Value(name + "-global", 64)
        kept.set(b"x")
        seg = shmem.Segment(name + "-seg", 4096)
        view = seg.buf[10:20]
        cycle = [shmem.Value(name + "-cycle", 64)]
        cycle.append(cycle)
        waiting = shmem.Value(name + "-waited", 64)
        t = threading.Thread(target=waiting.wait, args=(0,), daemon=True)
        t.start()
        aio = shmem.Value(name + "-aio", 64)
        import asyncio
        async def main():
            task = asyncio.ensure_future(aio.changed(0))
            await asyncio.sleep(0)
        asyncio.run(main())
        print("exiting with everything open")
        """,
        name,
    )
    assert proc.stdout == "exiting with everything open\n"
    assert proc.stderr == ""  # no warning, no "Exception ignored"
    assert files_of(name) == []


def test_a_killed_process_leaves_the_value_to_the_others(name):
    with shmem.Value(name, 64) as v:
        child = spawn(
            """
            import sys, shmem
            v = shmem.Value.open(sys.argv[1])
            v.set(b"before the crash")
            print("set", flush=True)
            v.wait(v.version)
            """,
            name,
        )
        assert child.stdout.readline() == "set\n"
        child.kill()
        child.wait(DEADLINE)
        assert v.get_versioned() == (1, b"before the crash")
        v.set(b"after")
        assert v.get() == b"after"
        assert files_of(name) == [f"shmem.{name}"]
    assert files_of(name) == []


def _mp_child(name, inherited, result):
    # Runs in a multiprocessing child: attach by name, read, and exit (normally).
    with shmem.Value.open(name) as v:
        result.put((v.created, v.get()))
    if inherited is not None:  # fork: the parent's own handle, copied
        result.put(inherited.get())


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_multiprocessing_child_leaves_the_parents_value_intact(name, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method")
    ctx = multiprocessing.get_context(method)
    with shmem.Value(name, 64) as v:
        v.set(b"the parent's")
        result = ctx.Queue()
        p = ctx.Process(target=_mp_child, args=(name, v if method == "fork" else None, result))
        p.start()
        assert result.get(timeout=DEADLINE) == (False, b"the parent's")
        if method == "fork":
            assert result.get(timeout=DEADLINE) == b"the parent's"
        p.join(DEADLINE)
        assert p.exitcode == 0
        # The child attached and left; the value, its contents and its name are all still here.
        assert v.get_versioned() == (1, b"the parent's")
        assert files_of(name) == [f"shmem.{name}"]
        with shmem.Value.open(name) as again:
            assert again.get() == b"the parent's"
    assert files_of(name) == []


def _mp_child_given_handles(v, seg, result):
    # The handles arrive pickled (spawn): reopened by name in this process.
    result.put((v.created, v.get(), bytes(seg.buf[:3])))
    v.set(b"set by the child")
    seg.buf[3:6] = b"def"


def test_handles_passed_to_a_spawned_child_reopen_by_name(name):
    ctx = multiprocessing.get_context("spawn")
    with shmem.Value(name, 64) as v, shmem.Segment(name + "-seg", 64) as seg:
        v.set(b"the parent's")
        seg.buf[:3] = b"abc"
        result = ctx.Queue()
        p = ctx.Process(target=_mp_child_given_handles, args=(v, seg, result))
        p.start()
        assert result.get(timeout=DEADLINE) == (False, b"the parent's", b"abc")
        p.join(DEADLINE)
        assert p.exitcode == 0
        assert v.get_versioned() == (2, b"set by the child")
        assert seg.read(0, 6) == b"abcdef"


def test_pickling_is_by_name(name):
    import pickle

    v = shmem.Value(name, 64)
    v.set(b"x")
    data = pickle.dumps(v)
    with pickle.loads(data) as again:
        assert again.name == name and not again.created and again.get() == b"x"
    v.close()
    with pytest.raises(ValueError, match="is closed"):
        pickle.dumps(v)
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)  # nobody holds it any more: gone, not recreated
    assert files_of(name) == []


def test_a_forked_child_that_exits_normally_leaves_the_value(name):
    # The child runs the interpreter's normal exit (atexit closes its copy of the handle);
    # the parent's value, contents and name stay.
    out = python(
        """
        import os, sys, shmem
        v = shmem.Value(sys.argv[1], 64)
        v.set(b"the parent's")
        pid = os.fork()
        if pid == 0:
            assert v.get() == b"the parent's"
            with shmem.Value.open(sys.argv[1]) as mine:
                mine.get()
            sys.exit(0)  # normal exit: atexit, finalisation
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert os.path.exists("/dev/shm/shmem." + sys.argv[1])
        print(v.get_versioned())
        """,
        name,
    ).stdout
    assert out == repr((1, b"the parent's")) + "\n"
    assert files_of(name) == []

"""await Value.changed(): woken by another process, never blocking the loop, cancellable."""

import asyncio
import threading

import pytest

import shmem
from conftest import DEADLINE, files_of, sleepers, spawn


def _changed_threads():
    return [t for t in threading.enumerate() if t.name.startswith("shmem-changed-")]


async def _until(condition):
    """Lets the loop run until `condition()` holds; fails after DEADLINE seconds."""

    async def poll():
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), DEADLINE)


def test_changed_is_woken_by_another_process_without_blocking_the_loop(name):
    async def main():
        # `v` persistent: its file is its memory, where sleepers() reads the flag.
        with shmem.Value(name, 64, persistent=True) as v, shmem.Value(name + "-go", 64) as go:
            child = spawn(
                """
                import sys, shmem
                with shmem.Value.open(sys.argv[1]) as v, shmem.Value.open(sys.argv[1] + "-go") as go:
                    go.wait(0, timeout=60)
                    v.set(b"from the child")
                """,
                name,
            )
            task = asyncio.ensure_future(v.changed(0, timeout=DEADLINE))
            # The loop keeps running this coroutine while the task's thread sleeps in the wait.
            await _until(lambda: sleepers(name) == 1)
            assert not task.done()
            go.set(b"go")
            assert await task == 1
            assert v.get() == b"from the child"
            assert await asyncio.get_running_loop().run_in_executor(None, child.wait, DEADLINE) == 0

    asyncio.run(main())
    shmem.unlink(name)


def test_changed_returns_at_once_when_already_changed(name):
    async def main():
        with shmem.Value(name, 64) as v:
            v.set(b"x")
            assert await v.changed(0) == 1

    asyncio.run(main())


def test_changed_times_out(name):
    async def main():
        with shmem.Value(name, 64) as v:
            with pytest.raises(TimeoutError, match=f"value '{name}'"):
                await v.changed(0, timeout=0.05)

    asyncio.run(main())


def test_cancelling_changed_ends_its_thread(name):
    async def main():
        with shmem.Value(name, 64) as v:
            task = asyncio.ensure_future(v.changed(0))
            await _until(_changed_threads)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _until(lambda: not _changed_threads())
            assert v.version == 0

    asyncio.run(main())
    assert files_of(name) == []


def test_wait_for_timeout_cancels_changed(name):
    async def main():
        with shmem.Value(name, 64) as v:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(v.changed(0), 0.05)
            await _until(lambda: not _changed_threads())

    asyncio.run(main())


def test_closing_the_value_fails_a_pending_changed(name):
    async def main():
        v = shmem.Value(name, 64)
        task = asyncio.ensure_future(v.changed(0))
        await _until(_changed_threads)
        v.close()
        with pytest.raises(ValueError, match="is closed"):
            await task

    asyncio.run(main())
    assert files_of(name) == []


def test_many_waiters_one_change(name):
    async def main():
        with shmem.Value(name, 64) as v:
            tasks = [asyncio.ensure_future(v.changed(0, timeout=DEADLINE)) for _ in range(8)]
            await _until(lambda: len(_changed_threads()) >= 8)
            v.set(b"all")
            assert await asyncio.gather(*tasks) == [1] * 8

    asyncio.run(main())

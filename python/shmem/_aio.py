"""``Value.changed()``: awaiting a change from asyncio without blocking the event loop.

A daemon thread sleeps in the native wait (GIL released) and hands the result to the loop
with ``call_soon_threadsafe``. If the awaiting task is cancelled, the token wakes the thread,
which then ends; closing the value or the interpreter's exit end it too.
"""

import asyncio
import threading
from typing import Optional

from ._shmem import Value, _CancelToken


def _settle(fut: "asyncio.Future[int]", result: Optional[int], error: Optional[BaseException]) -> None:
    if fut.done():
        return  # cancelled meanwhile
    if error is not None:
        fut.set_exception(error)
    elif result is None:
        fut.cancel()
    else:
        fut.set_result(result)


async def changed(value: Value, since: int, timeout: Optional[float] = None) -> int:
    now = value.version
    if now != since:
        return now
    loop = asyncio.get_running_loop()
    fut: "asyncio.Future[int]" = loop.create_future()
    token = _CancelToken()

    def run() -> None:
        result: Optional[int] = None
        error: Optional[BaseException] = None
        try:
            result = value._wait_cancellable(since, timeout, token)
        except BaseException as e:  # handed to the awaiting task
            error = e
        try:
            loop.call_soon_threadsafe(_settle, fut, result, error)
        except RuntimeError:
            pass  # the loop is closed: nobody awaits any more

    threading.Thread(target=run, name=f"shmem-changed-{value.name}", daemon=True).start()
    try:
        return await fut
    finally:
        token.cancel()  # ends the thread's wait if it still sleeps

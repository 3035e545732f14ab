"""The node's blocking work (model loading, inference) never holds up its exit: a stop
request abandons it, and neither asyncio's shutdown nor the interpreter waits for it."""

from __future__ import annotations

import asyncio
import threading
import time

from gridtask.node.daemon import DetachedThreads

BLOCKED_S = 5.0


def test_loop_shutdown_does_not_wait_for_blocking_work() -> None:
    release = threading.Event()
    started = threading.Event()

    def blocking() -> bool:
        started.set()
        return release.wait(BLOCKED_S)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(DetachedThreads())
        work = asyncio.create_task(asyncio.to_thread(blocking))
        await asyncio.to_thread(started.wait, BLOCKED_S)  # the work is running in its thread now
        work.cancel()  # what a stop request does to the task that awaits it

    began = time.monotonic()
    asyncio.run(main())  # closes the loop: shuts its default executor down
    took = time.monotonic() - began
    try:
        assert took < 1.0, f"asyncio.run waited {took:.1f} s for the blocking call"
        busy = [t for t in threading.enumerate() if t.name == "node-blocking" and t.is_alive()]
        assert busy and all(t.daemon for t in busy)  # the interpreter's exit will not wait either
    finally:
        release.set()


def test_results_and_errors_still_come_back() -> None:
    async def main() -> tuple[int, str]:
        asyncio.get_running_loop().set_default_executor(DetachedThreads())
        value = await asyncio.to_thread(lambda: 6 * 7)
        try:
            await asyncio.to_thread(int, "not a number")
        except ValueError as exc:
            return value, type(exc).__name__
        return value, ""

    assert asyncio.run(main()) == (42, "ValueError")

"""Long-polls (``?wait=``): hold a GET until what it names changes state, the wait ends, or the server
begins to stop.

The manager's threads wake a held request through the event loop, so holding one costs no thread. The
server's stop reaches every held request through an event that ``prepare_held_requests`` makes on the
loop and ``release_held_requests`` sets from anywhere (a signal handler, another thread).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from dli_kernel.server.manager import ManagedSession, SessionManager, Statement


def prepare_held_requests(app: Starlette) -> None:
    """Call on the event loop at start-up, so that ``release_held_requests`` can reach it."""
    app.state.loop = asyncio.get_running_loop()
    app.state.stopping = asyncio.Event()


def release_held_requests(app: Starlette) -> None:
    """End every long-poll now (the server is stopping). Safe from a signal handler or another thread."""
    loop, stopping = getattr(app.state, "loop", None), getattr(app.state, "stopping", None)
    if loop is not None and stopping is not None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop.call_soon_threadsafe(stopping.set)


async def hold(
    app: Starlette,
    manager: SessionManager,
    session: ManagedSession,
    statement: Statement | None,
    seen: str,
    seconds: float,
) -> None:
    """Return once the statement (or, without one, the session) is no longer in state ``seen``, after
    ``seconds``, or when the server begins to stop, whichever comes first."""
    thing = session if statement is None else statement
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(changed.set)

    stopping: asyncio.Event | None = getattr(app.state, "stopping", None)
    # Registering and unregistering take the manager's lock, which a manager thread may hold for a while:
    # both happen in a worker thread, and the unregistering even when the request is cancelled.
    watching = manager.watch(session, statement, wake)
    await run_in_threadpool(watching.__enter__)
    try:
        if thing.state != seen:  # it changed before we were watching
            return
        waiters = [asyncio.ensure_future(changed.wait())]
        if stopping is not None:
            waiters.append(asyncio.ensure_future(stopping.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
    finally:
        await asyncio.shield(run_in_threadpool(watching.__exit__, None, None, None))

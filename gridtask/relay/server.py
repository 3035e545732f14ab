"""Run the relay app with uvicorn, in-process, and stop it within seconds on SIGINT/SIGTERM.

The caller builds the app (``create_app`` with its chain client and store); this module
only serves it. The first signal starts a bounded shutdown: uvicorn stops accepting
connections, ``on_stop`` answers every long-poll at once, requests still in flight get
``GRACE_S`` to finish (an upload being received, a delivery being reported) and are then
cancelled, and ``serve()`` returns instead of dying with the signal. Cancelling is safe:
a blob is written to a temp file and renamed, so it is on disk whole or not at all, and a
delivery whose report was cut short is reported by the next start. A second signal exits
the process at once, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Generator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "RelayServer", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 3  # what requests in flight get after a stop signal; the exit stays under 5 s
logger = logging.getLogger("gridtask.relay")


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal after shutdown (we are a library)."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    def begin_shutdown(self) -> None:
        self.should_exit = True
        if self.on_stop is not None:
            self.on_stop()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()
        installed = []
        for sig in _HANDLED_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # Windows, or no loop signal support
                pass
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.should_exit:
            # Nothing on disk is ever half-written (temp file + rename), so leaving now is safe.
            logger.warning("relay: second %s, exiting now", sig.name)
            os._exit(128 + sig)
        logger.info("relay: %s received, shutting down (within %ds)", sig.name, GRACE_S)
        self.begin_shutdown()


class RelayServer:
    """``serve()`` runs until ``shutdown()`` or a signal; ``started`` says it is listening."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        log_level: str = "info",
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        """``on_stop`` is called as the shutdown begins (``create_app``'s ``app.state.stop``)."""
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, log_config=None, lifespan="on",
            timeout_graceful_shutdown=GRACE_S,
        )
        self._server = _GracefulServer(config, on_stop)

    @property
    def started(self) -> bool:
        return self._server.started

    async def serve(self) -> None:
        await self._server.serve()

    def shutdown(self) -> None:
        """Ask ``serve()`` to finish the requests in flight (within ``GRACE_S``) and return."""
        self._server.begin_shutdown()


async def serve(
    app: ASGIApp,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` until SIGINT/SIGTERM."""
    await RelayServer(app, host=host, port=port, on_stop=on_stop).serve()

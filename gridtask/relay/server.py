"""Run the relay app with uvicorn, in-process, and stop it cleanly on SIGINT/SIGTERM.

The caller builds the app (``create_app`` with its chain client and store); this module
only serves it. A signal sets a flag: uvicorn stops accepting connections, finishes the
requests in flight (an upload being fsynced, a delivery being reported on chain) and
``serve()`` returns normally instead of dying with the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator

import uvicorn
from starlette.types import ASGIApp

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "RelayServer", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8700
_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
logger = logging.getLogger("gridtask.relay")


class _GracefulServer(uvicorn.Server):
    """uvicorn's server, minus re-raising the signal after shutdown (we are a library)."""

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
        # A second Ctrl-C stops waiting for requests in flight.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            logger.info("relay: %s received, shutting down", sig.name)
            self.should_exit = True


class RelayServer:
    """``serve()`` runs until ``shutdown()`` or a signal; ``started`` says it is listening."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        log_level: str = "info",
    ) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, log_config=None, lifespan="off"
        )
        self._server = _GracefulServer(config)

    @property
    def started(self) -> bool:
        return self._server.started

    async def serve(self) -> None:
        await self._server.serve()

    def shutdown(self) -> None:
        """Ask ``serve()`` to finish the requests in flight and return."""
        self._server.should_exit = True


async def serve(app: ASGIApp, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` until SIGINT/SIGTERM."""
    await RelayServer(app, host=host, port=port).serve()

"""Logging, configured in one place: one line per event, named by role, so a devnet log
tells each task's story by its ID (``task 0x1a2b3c4d: ...``)."""

from __future__ import annotations

import logging.config


def configure_logging(level: str = "INFO", *, role: str = "gridtask") -> None:
    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": f"%(asctime)s {role:<8} %(levelname)-5s %(message)s",
                                "datefmt": "%H:%M:%S"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line"}},
        "loggers": {
            "gridtask": {"level": level, "handlers": ["stderr"], "propagate": False},
            "uvicorn.error": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
            "web3": {"level": "WARNING"},
        },
    })

"""A test source: typed functions that add, fail, hang, and answer the wrong model."""

import time

from pydantic import BaseModel

import gridtask.sdk.opengpu as ogpu

STATE = {"ready": False}


class Numbers(BaseModel):
    a: int
    b: int


class Sum(BaseModel):
    total: int
    ready: bool


class Nap(BaseModel):
    seconds: float


@ogpu.service.init()
def warm_up() -> None:
    STATE["ready"] = True


@ogpu.service.expose()
def add(data: Numbers) -> Sum:
    return Sum(total=data.a + data.b, ready=STATE["ready"])


@ogpu.service.expose()
def explode(data: Numbers) -> Sum:
    raise RuntimeError(f"cannot add {data.a}")


@ogpu.service.expose(timeout=1)
def slow(data: Nap) -> Sum:
    time.sleep(data.seconds)
    return Sum(total=0, ready=True)


@ogpu.service.expose()
def nap(data: Nap) -> Sum:
    """No timeout of its own: the node's deadline ends it (the task expires)."""
    time.sleep(data.seconds)
    return Sum(total=0, ready=True)


@ogpu.service.expose()
def wrong(data: Numbers) -> Sum:
    return {"total": 1}  # type: ignore[return-value]


ogpu.service.start()

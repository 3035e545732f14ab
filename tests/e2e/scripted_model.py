"""A scripted OpenAI-compatible chat server: each answer is chosen by the test, so a
workflow's branches, schema retries and function calls can be driven deterministically
through a real node's HTTP backend (``openai:NAME=URL``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .model_server import ChatServer

Reply = Callable[[list[dict[str, str]]], str]


def by_rules(*rules: tuple[str, str | list[str]]) -> Reply:
    """Answer the first rule whose text is in the last message; a list answers in turn (its
    last item then repeats). No rule: ``re: <last message>``."""
    turns: dict[str, int] = {}

    def reply(messages: list[dict[str, str]]) -> str:
        last = messages[-1]["content"]
        for needle, answer in rules:
            if needle in last:
                if isinstance(answer, str):
                    return answer
                turn = turns.get(needle, 0)
                turns[needle] = turn + 1
                return answer[min(turn, len(answer) - 1)]
        return f"re: {last}"

    return reply


class ScriptedModelServer(ChatServer):
    """``reply(messages) -> text`` answers each chat completion; ``bodies`` keeps the requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        super().__init__()

    def answer(self, body: dict[str, Any]) -> str:
        with self._lock:
            self.bodies.append(body)
            return self.reply(body["messages"])

"""A scripted OpenAI-compatible chat server: each answer is chosen by the test, so a
workflow's branches, schema retries and function calls can be driven deterministically
through a real node's HTTP backend (``openai:NAME=URL``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


class ScriptedModelServer:
    """``reply(messages) -> text`` answers each chat completion; ``bodies`` keeps the requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with server._lock:
                    server.bodies.append(body)
                    content = server.reply(body["messages"])
                answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()

"""OpenAI-compatible chat servers that tests hold. ``ChatServer`` is the one HTTP side of
them all; ``HeldModelServer`` answers only when the test says so. A node whose model it
is (``openai:held=URL``) is then provably in the middle of running a task (its request
arrived: the parameters were fetched, decrypted and checked) and cannot score it until
the test lets it, so a fault injected in that window needs no race."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def send_json(handler: BaseHTTPRequestHandler, payload: bytes) -> None:
    """Answer 200 with a JSON body; a client that went away meanwhile (a killed node) is
    no error of the server's."""
    try:
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except OSError:
        pass


class ChatServer:
    """A chat-completions server on a free local port: each POST's JSON body goes to
    ``answer(body) -> content``, which subclasses define."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                content = server.answer(body)
                message = {"role": "assistant", "content": content}
                send_json(self, json.dumps({"choices": [{"message": message}]}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def answer(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class HeldModelServer(ChatServer):
    """Answers ``re: <prompt>`` only once ``release`` is set; ``asked`` is set as soon as a
    node's request arrives."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.requests = 0
        super().__init__()

    def answer(self, body: dict[str, Any]) -> str:
        self.requests += 1
        self.asked.set()
        while not self.release.wait(0.1):
            pass
        return f"re: {body['messages'][-1]['content']}"

    def close(self) -> None:
        self.release.set()
        super().close()

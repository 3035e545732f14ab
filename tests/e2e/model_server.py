"""A model server that a test holds: an OpenAI-compatible chat endpoint that answers
only when the test says so. A node whose model it is (``openai:held=URL``) is then
provably in the middle of running a task (its request arrived: the parameters were
fetched, decrypted and checked) and cannot score it until the test lets it, so a fault
injected in that window needs no race."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HeldModelServer:
    """An OpenAI-compatible chat server that answers only once ``release`` is set;
    ``asked`` is set as soon as a node's request arrives."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests += 1
                server.asked.set()
                while not server.release.wait(0.1):
                    pass
                prompt = body["messages"][-1]["content"]
                answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": f"re: {prompt}"}}]})
                try:
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer.encode())
                except OSError:  # the node that asked was killed meanwhile
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.http.shutdown()

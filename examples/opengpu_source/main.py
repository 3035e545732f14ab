"""An OpenGPU source: a chat function nodes run in their sandbox (``examples/opengpu_quickstart.py``
publishes it). It answers without a model, so the quick start runs on any machine: replace the
body with a call to your model and it is a real service."""

from pydantic import BaseModel

import gridtask.sdk.opengpu as ogpu


class ChatMessage(BaseModel):
    role: str
    content: str


class InputData(BaseModel):
    messages: list[ChatMessage]


class Message(BaseModel):
    role: str
    content: str


@ogpu.service.expose(timeout=20)
def text2text(input_data: InputData) -> Message:
    """Answer the last user message (deterministic: every node gives the same answer)."""
    last = next((m.content for m in reversed(input_data.messages) if m.role == "user"), "")
    words = len(last.split())
    return Message(role="assistant", content=f"You said {last!r} ({words} word{'s' * (words != 1)}).")


ogpu.service.start()

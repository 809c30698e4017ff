"""What every provider returns and raises (plain values: no Twisted, no I/O)."""
from __future__ import annotations

from typing import Any, Optional, Union

import attrs

from titan.errors import TitanError


@attrs.frozen
class Usage:
    """Tokens one call consumed: what the prompt took (`tokens_in`) and the reply
    (`tokens_out`)."""
    tokens_in: int = 0
    tokens_out: int = 0

    @property
    def total(self) -> int:
        return self.tokens_in + self.tokens_out


@attrs.frozen
class Reply:
    """A model's answer to one `chat` call.

    `latency` is the seconds the call took, retries and their waits included (what the job
    waited); `cost` is in the currency of the prices the provider was given (0.0 when it has
    none); `model` is the model that answered (as the server names it)."""
    text: str
    usage: Usage = Usage()
    latency: float = 0.0
    cost: float = 0.0
    model: str = ""
    finish_reason: Optional[str] = None

    def __str__(self) -> str:
        return self.text


class ChatModelError(TitanError):
    """A model call failed: the message says what, and what to check."""


class NotConfigured(ChatModelError):
    """No provider, model or script is named (the message names the variables to set)."""


class AuthenticationError(ChatModelError):
    """The server refused the API key (HTTP 401 or 403): not retried."""


class ModelNotFound(ChatModelError):
    """The server knows no such model, or no such endpoint (HTTP 404): not retried."""


class RateLimited(ChatModelError):
    """Still rate limited (HTTP 429) after every retry."""


class ServerError(ChatModelError):
    """The server still failed (5xx) or could not be reached after every retry."""


class ChatTimeout(ChatModelError):
    """No answer within the timeout, on every attempt."""


class ScriptError(ChatModelError):
    """The scripted provider has no reply for a call, or its script cannot be read."""


Messages = Union[str, list]


def normalize_messages(messages: Any) -> list:
    """`messages` as a list of {"role", "content"} dicts (a string is one user message)."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if isinstance(messages, dict):
        messages = [messages]
    out = []
    for i, m in enumerate(messages or ()):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatModelError(f"messages[{i}]: expected a mapping with 'role' and "
                                 f"'content', not {m!r}")
        out.append(dict(m))
    if not out:
        raise ChatModelError("messages: at least one message is needed")
    return out


def last_user_text(messages: list) -> str:
    """The content of the last user message ('' when there is none)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):  # the OpenAI "parts" form
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""

"""An offline chat model for tests and demos: its replies come from a script, never a network.

    model = ScriptedChatModel(["first reply", "second reply"])            # in order
    model = ScriptedChatModel(lambda messages, **options: "always this")   # from a function
    model = ScriptedChatModel(path="script.yaml")   # or TITAN_LLM_SCRIPT=script.yaml

A script (a list, or a JSON or YAML file holding one) has entries of two kinds:

- a string, or `{"reply": TEXT}`: the next reply, in order;
- `{"match": REGEX, "reply": TEXT}`: the reply to any call whose last user message matches
  the regular expression (`re.search`).  Entries with `match` are tried first, in order; the
  first that matches answers, and is not used up.

The file may instead hold a mapping `{"replies": [...], "repeat": true}`: with `repeat`, the
in-order replies start over once used up; without it, a call past the end is a
`ScriptError` naming the call.  In a reply, `{prompt}` is replaced by the last user message
(nothing else is substituted: braces in JSON replies are left alone).

Deterministic: the same calls, in the same order, get the same replies.  Usage counts words
(whitespace-separated) as tokens; cost is 0.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any, Callable, Optional, Union

from zope.interface import implementer

from titan.agents.base import (Reply, ScriptError, Usage, last_user_text,
                               normalize_messages)
from titan.agents.interfaces import IChatModel

SCRIPT_VARIABLE = "TITAN_LLM_SCRIPT"


def _words(text: Any) -> int:
    if isinstance(text, list):
        return sum(_words(p.get("text", "")) for p in text if isinstance(p, dict))
    return len(str(text).split())


def load_script(path: str) -> tuple[list, bool]:
    """The entries of a script file (JSON or YAML) and whether they repeat."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ScriptError(f"{path}: cannot read the script ({SCRIPT_VARIABLE}): "
                          f"{e.strerror or e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml  # YAML is a superset of JSON: any other name is read as YAML
            data = yaml.safe_load(text)
    except ValueError as e:  # json.JSONDecodeError
        raise ScriptError(f"{path}: not valid JSON: {e}") from None
    except Exception as e:  # yaml.YAMLError
        raise ScriptError(f"{path}: not valid YAML: {e}") from None
    repeat = False
    if isinstance(data, dict):
        unknown = set(data) - {"replies", "repeat"}
        if unknown:
            raise ScriptError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: replies, "
                              "repeat)")
        repeat = bool(data.get("repeat", False))
        data = data.get("replies")
    if not isinstance(data, list):
        raise ScriptError(f"{path}: a script is a list of replies, or a mapping with "
                          "'replies' (a list)")
    return data, repeat


@implementer(IChatModel)
class ScriptedChatModel:
    """Replies from `replies` (a list of entries, or a function `f(messages, **options)`
    returning a string, a `Reply` or a dict of Reply's fields), or from the script file
    `path` (default: the file named by TITAN_LLM_SCRIPT)."""

    name = "scripted"

    def __init__(self, replies: Union[list, Callable, None] = None, *,
                 path: Optional[str] = None, repeat: bool = False,
                 model: str = "scripted") -> None:
        self.model = model
        self._function: Optional[Callable] = None
        self._in_order: list = []
        self._matches: list = []
        self._next = 0
        self._lock = threading.Lock()
        self.repeat = repeat
        self.calls = 0
        if replies is None:
            path = path or os.environ.get(SCRIPT_VARIABLE)
            if not path:
                raise ScriptError(f"the scripted model has no replies: give a list or a "
                                  f"function, or name a script file in {SCRIPT_VARIABLE}")
            replies, self.repeat = load_script(path)
            self.source = path
        else:
            self.source = "<function>" if callable(replies) else "<list>"
        if callable(replies):
            self._function = replies
            return
        for i, entry in enumerate(replies):
            where = f"{self.source}: entry {i + 1}"
            if isinstance(entry, str):
                self._in_order.append(entry)
            elif isinstance(entry, dict) and isinstance(entry.get("reply"), str) \
                    and set(entry) <= {"reply", "match"}:
                if "match" in entry:
                    try:
                        self._matches.append((re.compile(str(entry["match"])),
                                              entry["reply"]))
                    except re.error as e:
                        raise ScriptError(f"{where}: match is not a regular expression: "
                                          f"{e}") from None
                else:
                    self._in_order.append(entry["reply"])
            else:
                raise ScriptError(f"{where}: expected a string or a mapping with 'reply' "
                                  f"(and optionally 'match'), not {entry!r}")

    def chat(self, messages, **options) -> Reply:
        started = time.monotonic()
        messages = normalize_messages(messages)
        prompt = last_user_text(messages)
        with self._lock:
            self.calls += 1
            call = self.calls
            if self._function is not None:
                answer = self._function(messages, **options)
            else:
                answer = self._scripted(prompt, call)
        tokens_in = sum(_words(m.get("content", "")) for m in messages)
        model = options.get("model") or self.model
        if isinstance(answer, Reply):
            return answer
        if isinstance(answer, dict):
            fields = dict(answer)
            text = str(fields.pop("text", ""))
            usage = fields.pop("usage", None) or Usage(tokens_in, _words(text))
            if isinstance(usage, dict):
                usage = Usage(**usage)
            fields.setdefault("model", model)
            fields.setdefault("latency", time.monotonic() - started)
            return Reply(text=text, usage=usage, **fields)
        text = str(answer)
        return Reply(text=text, usage=Usage(tokens_in, _words(text)),
                     latency=time.monotonic() - started, cost=0.0, model=model,
                     finish_reason="stop")

    def _scripted(self, prompt: str, call: int) -> str:
        for pattern, reply in self._matches:
            if pattern.search(prompt):
                return reply.replace("{prompt}", prompt)
        if self._next >= len(self._in_order):
            if self.repeat and self._in_order:
                self._next = 0
            else:
                short = prompt if len(prompt) <= 80 else prompt[:77] + "..."
                raise ScriptError(
                    f"the script {self.source} has no reply for call {call} ({short!r}): "
                    f"{len(self._in_order)} in-order replies, all used, and no 'match' "
                    f"entry matches")
        reply = self._in_order[self._next]
        self._next += 1
        return reply.replace("{prompt}", prompt)

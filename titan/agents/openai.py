"""A chat model on any OpenAI-compatible server: OpenAI, vLLM, llama.cpp, Ollama, ...

    model = OpenAIChatModel()   # everything from the environment:
    #   TITAN_LLM_BASE_URL  the API's root, default https://api.openai.com/v1
    #                       (Ollama: http://127.0.0.1:11434/v1; vLLM: http://HOST:8000/v1)
    #   TITAN_LLM_MODEL     the model's name (required)
    #   TITAN_LLM_API_KEY   sent as a bearer token (local servers often need none)
    #   TITAN_LLM_TIMEOUT   seconds per HTTP attempt (default 120)
    #   TITAN_LLM_RETRIES   retries after the first attempt (default 4)
    #   TITAN_LLM_PRICE_IN, TITAN_LLM_PRICE_OUT   price per million tokens (Reply.cost)
    reply = model.chat([{"role": "user", "content": "hello"}], temperature=0)

Each call is one `POST {base}/chat/completions` (stdlib urllib: nothing to install in the
job).  A rate limit (429), a server error (5xx, 408), a timeout or a refused connection is
retried up to `retries` times, waiting `backoff * 2**n` seconds (at most `max_backoff`), or
what the server's Retry-After asks (at most `max_retry_after`).  A refused key (401, 403)
and an unknown model or endpoint (404) fail at once, with an error naming the variable to
check; the key itself is never printed (only its last four characters).
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Optional

from zope.interface import implementer

from titan.agents.base import (AuthenticationError, ChatModelError, ChatTimeout,
                               ModelNotFound, NotConfigured, RateLimited, Reply, ServerError,
                               Usage, normalize_messages)
from titan.agents.interfaces import IChatModel

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRIED = frozenset({408, 429, 500, 502, 503, 504})


def _number(environ, variable: str, default: Optional[float]) -> Optional[float]:
    raw = environ.get(variable)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise NotConfigured(f"{variable}={raw!r}: expected a number") from None
    if value < 0:
        raise NotConfigured(f"{variable}={raw!r}: expected a number >= 0")
    return value


def retry_after(value: Optional[str], now: Callable[[], float] = time.time) -> Optional[float]:
    """The seconds a Retry-After header asks for (a number or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def _server_message(body: bytes) -> str:
    """What an error body says: OpenAI's {"error": {"message"}} or the first of the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if data.get("message"):
            return str(data["message"])
    return text[:200] + ("..." if len(text) > 200 else "") or "(no message)"


@implementer(IChatModel)
class OpenAIChatModel:
    name = "openai"

    def __init__(self, base_url: Optional[str] = None, model: Optional[str] = None,
                 api_key: Optional[str] = None, *, timeout: Optional[float] = None,
                 retries: Optional[int] = None, backoff: float = 1.0,
                 max_backoff: float = 30.0, max_retry_after: float = 60.0,
                 price_in: Optional[float] = None, price_out: Optional[float] = None,
                 headers: Optional[dict] = None, environ: Optional[dict] = None,
                 sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if environ is None else environ
        self.base_url = (base_url or env.get("TITAN_LLM_BASE_URL")
                         or DEFAULT_BASE_URL).rstrip("/")
        self.model = model or env.get("TITAN_LLM_MODEL") or ""
        if not self.model:
            raise NotConfigured("no model named for the OpenAI-compatible provider: set "
                                "TITAN_LLM_MODEL (e.g. gpt-4o-mini, or llama3.1 on Ollama)")
        self.api_key = api_key if api_key is not None else (env.get("TITAN_LLM_API_KEY")
                                                             or None)
        self.timeout = timeout if timeout is not None else _number(env, "TITAN_LLM_TIMEOUT",
                                                                   120.0)
        self.retries = int(retries if retries is not None
                           else _number(env, "TITAN_LLM_RETRIES", 4))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.price_in = price_in if price_in is not None else _number(
            env, "TITAN_LLM_PRICE_IN", 0.0)
        self.price_out = price_out if price_out is not None else _number(
            env, "TITAN_LLM_PRICE_OUT", 0.0)
        self.headers = dict(headers or {})
        self.sleep = sleep
        self.clock = clock
        self.url = f"{self.base_url}/chat/completions"

    def _key_hint(self) -> str:
        if not self.api_key:
            return "TITAN_LLM_API_KEY is not set: no key was sent"
        return f"check TITAN_LLM_API_KEY (the key sent ends in ...{self.api_key[-4:]})"

    def chat(self, messages, **options) -> Reply:
        started = self.clock()
        body = {"model": options.pop("model", None) or self.model,
                "messages": normalize_messages(messages), **options}
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "titan.agents"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.headers)
        attempt = 0
        while True:
            attempt += 1
            wait, failure = None, None
            request = urllib.request.Request(self.url, data=data, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
                return self._reply(raw, body["model"], self.clock() - started)
            except urllib.error.HTTPError as e:
                status = e.code
                message = _server_message(e.read() or b"")
                what = f"{self.url}: HTTP {status}: {message}"
                if status in (401, 403):
                    raise AuthenticationError(f"{self.url}: HTTP {status}: the server refused "
                                              f"the API key ({self._key_hint()}): {message}"
                                              ) from None
                if status == 404:
                    raise ModelNotFound(f"{self.url}: HTTP 404: no model {body['model']!r} "
                                        f"there, or no such endpoint (check TITAN_LLM_MODEL "
                                        f"and TITAN_LLM_BASE_URL): {message}") from None
                if status not in RETRIED:
                    raise ChatModelError(what) from None
                asked = retry_after(e.headers.get("Retry-After") if e.headers else None)
                if asked is not None:
                    wait = min(asked, self.max_retry_after)
                failure = (RateLimited if status == 429 else ServerError), what
            except (socket.timeout, TimeoutError):
                failure = ChatTimeout, (f"{self.url}: no answer within {self.timeout:g} s "
                                        f"(TITAN_LLM_TIMEOUT)")
            except urllib.error.URLError as e:
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    failure = ChatTimeout, (f"{self.url}: no answer within "
                                            f"{self.timeout:g} s (TITAN_LLM_TIMEOUT)")
                else:
                    failure = ServerError, (f"cannot reach {self.url}: {e.reason} (check "
                                            f"TITAN_LLM_BASE_URL)")
            except (http.client.HTTPException, ConnectionError) as e:
                failure = ServerError, f"{self.url}: the connection failed: {e!r}"
            kind, what = failure
            if attempt > self.retries:
                tried = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                raise kind(f"{what} (gave up after {tried})")
            if wait is None:
                wait = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            self.sleep(wait)

    def _reply(self, raw: bytes, model: str, latency: float) -> Reply:
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            short = raw[:200].decode("utf-8", "replace")
            raise ChatModelError(f"{self.url}: not a chat completion: {short!r}") from None
        usage = data.get("usage") or {}
        tokens_in = int(usage.get("prompt_tokens") or 0)
        tokens_out = int(usage.get("completion_tokens") or 0)
        cost = (tokens_in * (self.price_in or 0.0) + tokens_out * (self.price_out or 0.0)) / 1e6
        return Reply(text=text, usage=Usage(tokens_in, tokens_out), latency=latency,
                     cost=cost, model=data.get("model") or model,
                     finish_reason=choice.get("finish_reason"))

"""OpenAI chat completions <-> the Anthropic Messages API, both ways, as pure functions.

The gateway speaks chat completions to its agents and routes, holds, settles and writes
receipts over that shape; a provider of platform ``anthropic`` gets the same call translated
here (request -> ``POST /v1/messages``), and its answer (JSON, or the Messages SSE events)
comes back as a chat completion (or ``chat.completion.chunk`` events with a usage chunk), so
every step after the adapter sees what an OpenAI-compatible provider would have sent.

What cannot be said in Messages (``n`` > 1, ``logprobs``, a JSON response format) is refused
with TranslationError naming the parameter, never silently dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "2023-06-01"
"""The ``anthropic-version`` header the translation is written against."""

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
           "max_tokens": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
# Sampling and bookkeeping parameters with no Messages counterpart and no effect on what the
# answer means; everything else unknown is refused.
_IGNORED = frozenset({"stream_options", "frequency_penalty", "presence_penalty", "seed",
                      "store", "metadata", "service_tier", "logit_bias", "user",
                      "parallel_tool_calls", "reasoning_effort", "prediction", "modalities"})
_MAPPED = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "stream",
                     "temperature", "top_p", "stop", "tools", "tool_choice", "n", "logprobs",
                     "top_logprobs", "response_format"})
# Anthropic error types -> the OpenAI error type an SDK expects for the same meaning.
_ERROR_TYPES = {"invalid_request_error": "invalid_request_error",
                "authentication_error": "authentication_error",
                "permission_error": "permission_error", "not_found_error": "not_found_error",
                "request_too_large": "invalid_request_error",
                "rate_limit_error": "rate_limit_error", "api_error": "server_error",
                "overloaded_error": "server_error"}
OVERLOADED = 529
"""Anthropic's "overloaded" status: relayed as 503 so the gateway fails over as for any
provider that is temporarily down."""


class TranslationError(ValueError):
    """The chat request cannot be said in the Messages API; ``param`` names what."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or an array of ``text`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(
                    part.get("text"), str):
                raise TranslationError(f"{where}: only text parts can be translated here",
                                       where)
            out.append(part["text"])
        return "".join(out)
    raise TranslationError(f"{where}: content must be a string or an array of parts", where)


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str):
        raise TranslationError(f"{where}: image_url.url must be a string", where)
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        media = head[5:].removesuffix(";base64")
        if not sep or not head.endswith(";base64"):
            raise TranslationError(f"{where}: only base64 data URLs can be translated", where)
        return {"type": "image", "source": {"type": "base64", "media_type": media,
                                            "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}: content must be a string or an array of parts", where)
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part, f"{where}[{i}]"))
        else:
            raise TranslationError(f"{where}[{i}]: part type {kind!r} cannot be translated",
                                   where)
    return blocks


def _assistant_blocks(msg: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text(msg.get("content"), where + ".content")
    if text:
        blocks.append({"type": "text", "text": text})
    calls = msg.get("tool_calls") or []
    if not isinstance(calls, list):
        raise TranslationError(f"{where}.tool_calls must be an array", where)
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(
                call.get("id"), str):
            raise TranslationError(f"{where}.tool_calls[{i}]: id and function.name needed",
                                   where)
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            raise TranslationError(f"{where}.tool_calls[{i}].function.arguments is not JSON",
                                   where) from None
        if not isinstance(args, dict):
            raise TranslationError(f"{where}.tool_calls[{i}].function.arguments must be a "
                                   "JSON object", where)
        blocks.append({"type": "tool_use", "id": call["id"], "name": fn["name"],
                       "input": args})
    return blocks


def _messages(messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
    """(system text, Messages turns): system and developer messages go to ``system``; tool
    results become ``tool_result`` blocks of a user turn; consecutive turns of one role
    merge (Messages wants them alternating)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"{where} must be an object", "messages")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.append(_text(msg.get("content"), where + ".content"))
            continue
        if role == "user":
            out_role, blocks = "user", _user_blocks(msg.get("content"), where + ".content")
        elif role == "assistant":
            out_role, blocks = "assistant", _assistant_blocks(msg, where)
        elif role == "tool":
            if not isinstance(msg.get("tool_call_id"), str):
                raise TranslationError(f"{where}.tool_call_id is required", "messages")
            out_role, blocks = "user", [{"type": "tool_result",
                                         "tool_use_id": msg["tool_call_id"],
                                         "content": _text(msg.get("content"),
                                                          where + ".content")}]
        else:
            raise TranslationError(f"{where}.role {role!r} cannot be translated", "messages")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == out_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": out_role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise TranslationError("'tools' must be an array", "tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(
                fn, dict) or not isinstance(fn.get("name"), str):
            raise TranslationError(f"tools[{i}]: only function tools with a name", "tools")
        entry: dict[str, Any] = {"name": fn["name"], "input_schema": fn.get("parameters") or
                                 {"type": "object", "properties": {}}}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        out.append(entry)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any]:
    if choice == "auto":
        out: dict[str, Any] = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict) and isinstance(
            choice["function"].get("name"), str):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise TranslationError("'tool_choice' must be auto, required, none or a function",
                               "tool_choice")
    if parallel is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_messages_request(req: dict[str, Any]) -> dict[str, Any]:
    """The Messages request for chat request ``req``. ``max_tokens`` is required there: the
    gateway always forwards the cap its hold assumed, so a request without one is refused."""
    unknown = sorted(k for k in req if k not in _MAPPED and k not in _IGNORED)
    if unknown:
        raise TranslationError(f"'{unknown[0]}' cannot be translated to the Anthropic "
                               "Messages API", unknown[0])
    if (req.get("n") or 1) != 1:
        raise TranslationError("'n' > 1 is not supported by the Anthropic Messages API", "n")
    if req.get("logprobs") or req.get("top_logprobs"):
        raise TranslationError("'logprobs' is not supported by the Anthropic Messages API",
                               "logprobs")
    fmt = req.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise TranslationError("'response_format' other than text is not translated to the "
                               "Anthropic Messages API", "response_format")
    cap = req.get("max_completion_tokens", req.get("max_tokens"))
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise TranslationError("a positive 'max_tokens' is required by the Anthropic "
                               "Messages API", "max_tokens")
    messages = req.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("'messages' must be an array", "messages")
    system, turns = _messages(messages)
    out: dict[str, Any] = {"model": req["model"], "max_tokens": cap, "messages": turns}
    if system:
        out["system"] = system
    for name in ("temperature", "top_p"):
        if req.get(name) is not None:
            out[name] = req[name]
    stop = req.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    if req.get("tools"):
        out["tools"] = _tools(req["tools"])
    if req.get("tool_choice") is not None:
        if req["tool_choice"] == "none" and not req.get("tools"):
            pass  # nothing to choose from: Messages would refuse the bare choice
        else:
            out["tool_choice"] = _tool_choice(req["tool_choice"],
                                              req.get("parallel_tool_calls"))
    if isinstance(req.get("user"), str):
        out["metadata"] = {"user_id": req["user"]}
    if req.get("stream"):
        out["stream"] = True
    return out


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Messages usage as chat usage: the prompt counts the cache reads and writes too (they
    are input the provider charges for; Messages' ``input_tokens`` leaves them out)."""
    if not isinstance(usage, dict):
        return None

    def n(key: str) -> int:
        v = usage.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 0

    if not isinstance(usage.get("input_tokens"), int) or not isinstance(
            usage.get("output_tokens"), int):
        return None  # not understood: the gateway charges the hold's worst case
    prompt = n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens")
    out = n("output_tokens")
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": n("cache_read_input_tokens")}}


def from_messages_response(msg: dict[str, Any], created: int) -> dict[str, Any]:
    """The chat completion for Messages answer ``msg``."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": json.dumps(block.get("input") or {},
                                                               separators=(",", ":"))}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": msg.get("id"), "object": "chat.completion", "created": created,
        "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": _FINISH.get(str(msg.get("stop_reason")), "stop")}]}
    usage = chat_usage(msg.get("usage"))
    if usage is not None:
        out["usage"] = usage
    return out


def error_body(status: int, data: bytes) -> bytes:
    """An Anthropic error answer as an OpenAI error body (SDKs read ``error.message``)."""
    try:
        obj = json.loads(data)
        err = obj.get("error") if isinstance(obj, dict) else None
    except (ValueError, UnicodeDecodeError):
        err = None
    if isinstance(err, dict):
        kind = str(err.get("type", "api_error"))
        message = str(err.get("message", ""))
    else:
        kind, message = "api_error", data[:200].decode("utf-8", "replace")
    return encode({"error": {"message": f"anthropic: {message}" if message else "anthropic: "
                             f"HTTP {status}", "type": _ERROR_TYPES.get(kind, "server_error"),
                             "param": None, "code": kind}})


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + encode(obj) + b"\n\n"


@dataclass
class StreamTranslator:
    """Messages SSE events in, ``chat.completion.chunk`` events out (pure: bytes -> bytes).

    ``include_usage``: end with the usage chunk (``choices: []``) before ``[DONE]``, as OpenAI
    does when asked. A Messages ``error`` event becomes an OpenAI error event and ends the
    stream without ``[DONE]`` (so the gateway sees an unfinished stream)."""

    created: int
    include_usage: bool = True
    _buf: bytes = b""
    _id: str = ""
    _model: str = ""
    _usage: dict[str, Any] = field(default_factory=dict)
    _tools: dict[int, int] = field(default_factory=dict)  # block index -> tool_calls index
    done: bool = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({"id": self._id, "object": "chat.completion.chunk",
                       "created": self.created, "model": self._model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": finish}]})

    def feed(self, data: bytes) -> bytes:
        """The chat events for the complete Messages events in ``data`` (and before)."""
        self._buf += data.replace(b"\r\n", b"\n")
        out: list[bytes] = []
        while not self.done:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            raw, self._buf = self._buf[:end], self._buf[end + 2:]
            out.extend(self._translate(raw))
        return b"".join(out)

    def _payloads(self, raw: bytes) -> Iterator[dict[str, Any]]:
        data = b"\n".join(line[5:].lstrip(b" ") for line in raw.split(b"\n")
                          if line.startswith(b"data:"))
        if not data:
            return
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            yield {"type": "error", "error": {"type": "api_error",
                                              "message": "a stream event is not JSON"}}
            return
        if isinstance(obj, dict):
            yield obj

    def _translate(self, raw: bytes) -> Iterator[bytes]:
        for ev in self._payloads(raw):
            kind = ev.get("type")
            if kind == "message_start":
                msg = _obj(ev.get("message"))
                self._id, self._model = str(msg.get("id", "")), str(msg.get("model", ""))
                if isinstance(msg.get("usage"), dict):
                    self._usage.update(msg["usage"])
                yield self._chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = ev.get("content_block") or {}
                if block.get("type") == "tool_use":
                    k = self._tools[int(ev.get("index", 0))] = len(self._tools)
                    yield self._chunk({"tool_calls": [{
                        "index": k, "id": block.get("id"), "type": "function",
                        "function": {"name": block.get("name"), "arguments": ""}}]})
                elif block.get("type") == "text" and block.get("text"):
                    yield self._chunk({"content": block["text"]})
            elif kind == "content_block_delta":
                delta = ev.get("delta") or {}
                if delta.get("type") == "text_delta":
                    yield self._chunk({"content": delta.get("text", "")})
                elif delta.get("type") == "input_json_delta":
                    k = self._tools.get(int(ev.get("index", 0)), 0)
                    yield self._chunk({"tool_calls": [{
                        "index": k, "function": {"arguments": delta.get("partial_json", "")}}]})
            elif kind == "message_delta":
                if isinstance(ev.get("usage"), dict):
                    self._usage.update(ev["usage"])
                reason = (ev.get("delta") or {}).get("stop_reason")
                yield self._chunk({}, _FINISH.get(str(reason), "stop"))
            elif kind == "message_stop":
                usage = chat_usage(self._usage)
                if self.include_usage and usage is not None:
                    yield _event({"id": self._id, "object": "chat.completion.chunk",
                                  "created": self.created, "model": self._model,
                                  "choices": [], "usage": usage})
                self.done = True
                yield b"data: [DONE]\n\n"
                return
            elif kind == "error":
                err = _obj(ev.get("error"))
                kind_s = str(err.get("type", "api_error"))
                self.done = True
                yield _event({"error": {"message": f"anthropic: {err.get('message', '')}",
                                        "type": _ERROR_TYPES.get(kind_s, "server_error"),
                                        "param": None, "code": kind_s}})
                return
            # ping, content_block_stop, thinking deltas: nothing to say in chat chunks

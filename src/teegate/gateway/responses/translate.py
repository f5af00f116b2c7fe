"""Responses API <-> chat completions, for providers that only speak chat (pure: JSON in,
JSON out; the gateway hashes and checks the provider's bytes, the agent gets these).

Request: ``instructions`` -> a system message; ``input`` (a string or items: messages with
text/image parts, ``function_call``, ``function_call_output``; the stored history of a
``previous_response_id`` first) -> ``messages``; function ``tools`` and ``tool_choice``,
``text.format`` -> ``response_format``, ``max_output_tokens`` -> the provider's token
limit field; ``temperature``, ``top_p``, ``parallel_tool_calls``, ``user`` as they are.
Tools other than functions (web search, file search, ...) cannot be translated: 400.

Answer: the first choice -> a ``message`` item (``output_text``) and ``function_call``
items; usage as ``input_tokens``/``output_tokens``; ``finish_reason: length`` ->
``status: incomplete``. Streams: chat chunks -> typed events (``response.created``,
``response.output_item.added``, ``response.output_text.delta``,
``response.function_call_arguments.delta``, ... ``response.completed``)."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from teegate.gateway.errors import GatewayRefusal

NAME = "responses->chat.completions"
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_PASSED = ("temperature", "top_p", "parallel_tool_calls", "user")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def _bad(message: str, param: str) -> GatewayRefusal:
    return GatewayRefusal(400, message, code="invalid_request", param=param)


def input_items(value: Any) -> list[dict[str, Any]]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(i, dict) for i in value):
        return list(value)
    raise _bad("'input' must be a string or an array of input items", "input")


def _text(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("a message's 'content' must be a string or an array of parts", param)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            url: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail"):
                url["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": url})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise _bad(f"content part {kind!r} cannot be sent to a chat-only provider", param)
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def to_messages(items: list[dict[str, Any]], instructions: Any) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"message role {role!r} is not one of user, assistant, system, "
                           "developer", "input")
            messages.append({"role": role, "content": _text(item.get("content"), "input")})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id", "")), "type": "function",
                    "function": {"name": str(item.get("name", "")),
                                 "arguments": str(item.get("arguments", ""))}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id", "")),
                             "content": output if isinstance(output, str) else
                             json.dumps(output)})
        elif kind == "reasoning":
            continue  # a chat provider takes no reasoning items back
        else:
            raise _bad(f"input item {kind!r} cannot be sent to a chat-only provider", "input")
    return messages


def to_chat(req: dict[str, Any], items: list[dict[str, Any]], cap_field: str, cap: int
            ) -> dict[str, Any]:
    """The chat request for a Responses request whose whole input is ``items``."""
    chat: dict[str, Any] = {"model": req["model"],
                            "messages": to_messages(items, req.get("instructions"))}
    tools = req.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise _bad("'tools' must be an array", "tools")
        out = []
        for t in tools:
            if not isinstance(t, dict) or t.get("type") != "function":
                kind = t.get("type") if isinstance(t, dict) else t
                raise _bad(f"tool {kind!r} cannot be sent to a chat-only provider (only "
                           "function tools)", "tools")
            fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if k in t}
            out.append({"type": "function", "function": fn})
        chat["tools"] = out
    choice = req.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = (req.get("text") or {}).get("format") if isinstance(req.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    for k in _PASSED:
        if req.get(k) is not None:
            chat[k] = req[k]
    chat[cap_field] = cap
    if req.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def usage(u: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(u, dict):
        return None
    i = int(u.get("prompt_tokens") or 0)
    o = int(u.get("completion_tokens") or 0)
    details = u.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens", 0) if isinstance(details, dict) else 0
    cached = u.get("prompt_tokens_details")
    return {"input_tokens": i, "output_tokens": o,
            "total_tokens": int(u.get("total_tokens") or i + o),
            "input_tokens_details": {"cached_tokens": (cached or {}).get("cached_tokens", 0)
                                     if isinstance(cached, dict) else 0},
            "output_tokens_details": {"reasoning_tokens": reasoning or 0}}


class Shape:
    """The parts of a response object that do not come from the provider's answer."""

    def __init__(self, req: dict[str, Any], response_id: str, store: bool) -> None:
        self.req = req
        self.id = response_id
        self.store = store
        self.created_at = int(time.time())

    def response(self, status: str, output: list[dict[str, Any]], model: str,
                 usage_: dict[str, Any] | None, incomplete: str | None = None
                 ) -> dict[str, Any]:
        r = self.req
        text = r.get("text") if isinstance(r.get("text"), dict) else {"format": {"type": "text"}}
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": r.get("instructions"), "max_output_tokens":
                r.get("max_output_tokens"), "model": model, "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": r.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "store": self.store,
            "temperature": r.get("temperature", 1.0), "text": text,
            "tool_choice": r.get("tool_choice", "auto"), "tools": r.get("tools") or [],
            "top_p": r.get("top_p", 1.0), "truncation": "disabled", "usage": usage_,
            "user": r.get("user"), "metadata": r.get("metadata") or {},
        }


def _message(text: str, item_id: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _call(call_id: str, name: str, arguments: str, item_id: str,
          status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


class Translation:
    """``Translation`` of one call (teegate.gateway.pipeline.endpoint)."""

    name: str | None = NAME

    def __init__(self, shape: Shape) -> None:
        self.shape = shape

    def plain(self, data: bytes) -> bytes:
        try:
            chat = json.loads(data)
            choice = chat["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return data  # not a completion: relayed as the provider sent it
        output: list[dict[str, Any]] = []
        if message.get("content"):
            output.append(_message(str(message["content"]), new_id("msg_")))
        for tc in message.get("tool_calls") or ():
            fn = tc.get("function") or {}
            output.append(_call(str(tc.get("id") or new_id("call_")), str(fn.get("name", "")),
                                str(fn.get("arguments", "")), new_id("fc_")))
        length = choice.get("finish_reason") == "length"
        doc = self.shape.response("incomplete" if length else "completed", output,
                                  str(chat.get("model") or self.shape.req["model"]),
                                  usage(chat.get("usage")),
                                  "max_output_tokens" if length else None)
        return json.dumps(doc).encode()

    def stream(self, usage_: Callable[[], dict[str, Any] | None]) -> StreamTranslator:
        return StreamTranslator(self.shape, usage_)


class StreamTranslator:
    """Chat chunks in, Responses events out (``StreamTranslation``)."""

    def __init__(self, shape: Shape, usage_: Callable[[], dict[str, Any] | None]) -> None:
        self.shape = shape
        self.usage = usage_
        self.seq = 0
        self.started = False
        self.model = str(shape.req["model"])
        self.text: list[str] = []
        self.msg_id: str | None = None
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool call index -> item
        self.order: list[tuple[str, Any]] = []  # ("message", None) / ("call", index)
        self.finish: str | None = None
        self.final: bytes | None = None
        self.pending = b""

    def _event(self, kind: str, **body: Any) -> bytes:
        body = {"type": kind, "sequence_number": self.seq, **body}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + json.dumps(body).encode() + b"\n\n"

    def _start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        doc = self.shape.response("in_progress", [], self.model, None)
        return (self._event("response.created", response=doc)
                + self._event("response.in_progress", response=doc))

    def feed(self, events: bytes) -> bytes:
        buf = self.pending + events
        out: list[bytes] = []
        start = 0
        for m in EVENT_END.finditer(buf):
            out.append(self._one(buf[start:m.start()]))
            start = m.end()
        self.pending = buf[start:]
        return b"".join(out)

    def _one(self, event: bytes) -> bytes:
        data = b"".join(line[5:].strip() for line in event.splitlines()
                        if line.startswith(b"data:"))
        if not data:
            return b""
        if data == b"[DONE]":
            return self._start() + self._done()
        try:
            chunk = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if isinstance(chunk.get("error"), dict):  # the provider's, or the gateway's own
            err = chunk["error"]
            return self._start() + self._event(
                "error", code=err.get("code"), message=str(err.get("message", "")),
                param=err.get("param"))
        out = [self._start()]
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(self._text(str(delta["content"])))
            for tc in delta.get("tool_calls") or ():
                out.append(self._tool(tc))
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return b"".join(out)

    def _index(self) -> int:
        return len(self.order)

    def _text(self, delta: str) -> bytes:
        out = b""
        if self.msg_id is None:
            self.msg_id = new_id("msg_")
            self.msg_index = self._index()
            self.order.append(("message", None))
            out += self._event("response.output_item.added", output_index=self.msg_index,
                               item={**_message("", self.msg_id, "in_progress"),
                                     "content": []})
            out += self._event("response.content_part.added", item_id=self.msg_id,
                               output_index=self.msg_index, content_index=0,
                               part={"type": "output_text", "text": "", "annotations": []})
        self.text.append(delta)
        return out + self._event("response.output_text.delta", item_id=self.msg_id,
                                 output_index=self.msg_index, content_index=0, delta=delta,
                                 logprobs=[])

    def _tool(self, tc: Any) -> bytes:
        if not isinstance(tc, dict):
            return b""
        i = tc.get("index", 0)
        fn = tc.get("function") or {}
        out = b""
        item = self.calls.get(i)
        if item is None:
            item = self.calls[i] = _call(str(tc.get("id") or new_id("call_")),
                                         str(fn.get("name") or ""), "", new_id("fc_"),
                                         "in_progress")
            item["output_index"] = self._index()
            self.order.append(("call", i))
            out += self._event("response.output_item.added", output_index=item["output_index"],
                               item={k: v for k, v in item.items() if k != "output_index"})
        args = fn.get("arguments")
        if args:
            item["arguments"] += str(args)
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=item["output_index"], delta=str(args))
        return out

    def _done(self) -> bytes:
        out: list[bytes] = []
        output: list[dict[str, Any]] = []
        for kind, i in self.order:
            if kind == "message":
                assert self.msg_id is not None
                text = "".join(self.text)
                done = _message(text, self.msg_id)
                out += [self._event("response.output_text.done", item_id=self.msg_id,
                                    output_index=self.msg_index, content_index=0, text=text,
                                    logprobs=[]),
                        self._event("response.content_part.done", item_id=self.msg_id,
                                    output_index=self.msg_index, content_index=0,
                                    part=done["content"][0]),
                        self._event("response.output_item.done",
                                    output_index=self.msg_index, item=done)]
                output.append(done)
            else:
                item = self.calls[i]
                index = item.pop("output_index")
                item["status"] = "completed"
                out += [self._event("response.function_call_arguments.done",
                                    item_id=item["id"], output_index=index,
                                    arguments=item["arguments"]),
                        self._event("response.output_item.done", output_index=index,
                                    item=item)]
                output.append(item)
        length = self.finish == "length"
        doc = self.shape.response("incomplete" if length else "completed", output,
                                  self.model, usage(self.usage()),
                                  "max_output_tokens" if length else None)
        self.final = json.dumps(doc).encode()
        out.append(self._event("response.incomplete" if length else "response.completed",
                               response=doc))
        return b"".join(out)

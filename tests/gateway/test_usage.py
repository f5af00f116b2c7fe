"""What a call is charged from the usage its provider reports, in every shape real providers
send, through a real gateway on loopback, on SQLite and PostgreSQL. Before, anything but
``prompt_tokens``/``completion_tokens`` was read as zero tokens (a per-token model was then
free), nulls and negatives too, and 7.9 tokens were charged as 7."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from teegate.ledger import Ledger, open_ledger
from tests.gateway.conftest import GatewayFactory, Gw, wait
from tests.gateway.loopback import Server, serving
from tests.ledger.conftest import _PG, PG_URL, drop_schema

PRICE = {"input": 1_000_000, "output": 2_000_000}  # 1 unit per prompt token, 2 per output
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


@dataclass
class Script:
    """What the scripted provider answers next: a JSON body, or SSE events (then, if
    ``cut``, the connection drops before the stream ends)."""

    answer: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] | None = None
    cut: bool = False

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            await request.body()
            if self.events is None:
                return JSONResponse(self.answer)
            events, cut = list(self.events), self.cut

            async def gen() -> AsyncIterator[bytes]:
                for e in events:
                    yield b"data: " + json.dumps(e).encode() + b"\n\n"
                if cut:
                    raise ConnectionResetError("provider went away")
                yield b"data: [DONE]\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture(scope="module")
def script() -> Iterator[tuple[Script, Server]]:
    s = Script()
    with serving(s.app()) as server:
        yield s, server


@pytest.fixture(params=["sqlite", "postgresql"])
def money(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    if request.param == "postgresql":
        if not _PG:
            pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
        schema = f"tl_usage_{uuid.uuid4().hex[:12]}"
        lg = open_ledger(PG_URL, schema=schema)
        yield lg
        lg.close()
        drop_schema(schema)
    else:
        lg = open_ledger(f"sqlite:///{tmp_path / 'money.db'}")
        yield lg
        lg.close()


@pytest.fixture
def gw(make_gateway: GatewayFactory, money: Ledger, script: tuple[Script, Server]) -> Gw:
    return make_gateway([{"id": "p", "platform": "open-ai", "base_url": script[1].url + "/v1",
                          "models": ["m"], "prices": {"m": PRICE}}], ledger=money)


def _agent(gw: Gw) -> str:
    agent = gw.gateway.keys.cached(gw.key)
    assert agent is not None
    return str(agent.id)


def _call(gw: Gw, money: Ledger, body: dict[str, Any] | None = None) -> tuple[int, int]:
    """(charged, held) of one call: held is the hold's worst case."""
    agent = _agent(gw)
    seen = {t.id for t in money.transfers(agent, limit=1000)}
    r = httpx.post(gw.url + "/chat/completions", json=body or BODY,
                   headers={"authorization": f"Bearer {gw.key}"})
    assert r.status_code == 200, r.text
    if body and body.get("stream"):
        assert r.text  # read to the end
    wait(lambda: money.balance(agent).held == 0)
    new = [t for t in money.transfers(agent, limit=1000) if t.id not in seen]
    held = sum(t.amount for t in new if t.kind == "hold")
    charged = sum(t.amount for t in new if t.kind == "charge")
    return charged, held


def _answer(usage: object) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}], "usage": usage}


@pytest.mark.parametrize(("usage", "cost"), [
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, 20),
    ({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
      "input_tokens_details": {"cached_tokens": 4},
      "output_tokens_details": {"reasoning_tokens": 2}}, 20),  # OpenAI Responses
    ({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 3,
      "cache_read_input_tokens": 7}, 30),  # Anthropic: the cache is not in input_tokens
    ({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": None,
      "cache_read_input_tokens": None}, 20),
    ({"prompt_tokens": 10, "total_tokens": 15, "completion_tokens": 5,
      "prompt_tokens_details": None}, 20),  # vLLM
    ({"total_tokens": 15}, 30),  # no split: every token at the dearer price
    ({"prompt_tokens": 10, "total_tokens": 15}, 20),
    ({"prompt_tokens": 7.9, "completion_tokens": 2.1}, 8 + 2 * 3),  # rounded up
])
def test_each_usage_shape_is_charged_what_it_reports(gw: Gw, money: Ledger,
                                                     script: tuple[Script, Server],
                                                     usage: dict[str, Any], cost: int) -> None:
    money.deposit(_agent(gw), 1_000_000)
    s, _ = script
    s.events, s.answer = None, _answer(usage)
    charged, held = _call(gw, money)
    assert charged == cost
    assert held > cost
    assert money.check().ok


@pytest.mark.parametrize("usage", [
    None, {}, {"prompt_tokens": None, "completion_tokens": None}, {"tokens": 12},
    {"prompt_tokens": -5, "completion_tokens": 5}, {"prompt_tokens": "10",
                                                    "completion_tokens": "5"},
])
def test_usage_that_is_not_understood_is_charged_the_worst_case_and_logged(
        gw: Gw, money: Ledger, script: tuple[Script, Server], usage: object,
        caplog: pytest.LogCaptureFixture) -> None:
    money.deposit(_agent(gw), 1_000_000)
    s, _ = script
    s.events, s.answer = None, _answer(usage)
    with caplog.at_level(logging.WARNING, logger="teegate.gateway"):
        charged, held = _call(gw, money)
    assert charged == held > 0
    assert any(("is not understood" in r.getMessage() or "without usage" in r.getMessage())
               and "charged the hold's worst case" in r.getMessage() for r in caplog.records)


def test_a_streamed_responses_style_usage_is_charged(gw: Gw, money: Ledger,
                                                     script: tuple[Script, Server]) -> None:
    money.deposit(_agent(gw), 1_000_000)
    s, _ = script
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    s.cut, s.events = False, [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}}]},
        {**chunk, "choices": [], "usage": {"input_tokens": 10, "output_tokens": 5}}]
    charged, _ = _call(gw, money, {**BODY, "stream": True})
    assert charged == 20
    rows = money.spend(_agent(gw))
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (10, 5)


def test_the_role_chunk_of_a_cut_stream_is_no_output_token(
        gw: Gw, money: Ledger, script: tuple[Script, Server]) -> None:
    """A stream cut before usage is charged the prompt estimate plus one token per event
    that carried output; the first chunk (``role`` and an empty ``content``) carries none."""
    money.deposit(_agent(gw), 1_000_000)
    s, _ = script
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    role = {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
    word = {**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}}]}
    s.cut = True
    s.events = [word]
    without_role, held = _call(gw, money, {**BODY, "stream": True})
    s.events = [role, word]
    with_role, _ = _call(gw, money, {**BODY, "stream": True})
    s.events = [role, word, word, word]
    three, _ = _call(gw, money, {**BODY, "stream": True})
    assert 0 < without_role < held
    assert with_role == without_role
    assert three == without_role + 2 * 2
    assert money.check().ok

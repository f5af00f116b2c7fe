"""Real client libraries, unchanged, against ``teegate serve`` with no configuration (the
embedded development default) over real loopback HTTP: what an agent framework does when
pointed at teegate's base URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

MODEL = "teegate-builtin"


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT/v1
    key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, dev_pki: Path) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("clients")
    home = root / "home"
    home.mkdir()
    (home / "dev-pki").symlink_to(dev_pki)
    port = _free_port()
    exe = Path(sys.executable).parent / "teegate"
    proc = subprocess.Popen([str(exe), "serve", "--port", str(port)], cwd=root,
                            env={**os.environ, "TEEGATE_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "teegate serve exited"
            try:
                if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "teegate serve did not become ready"
            time.sleep(0.2)
        yield Served(base + "/v1", (home / "default-agent.key").read_text().strip())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def client(served: Served) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=served.base, api_key=served.key, max_retries=0)
    yield c
    c.close()


def test_openai_chat_plain_and_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8)
    done = raw.parse()
    assert done.choices[0].message.content
    assert raw.headers["x-teegate-trust"] == "attested"
    assert raw.headers["x-teegate-receipt"].startswith("rcpt_")
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=8,
        stream=True) if c.choices)
    assert text == done.choices[0].message.content


def test_openai_embeddings(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a", "b c"])
    r = raw.parse()
    assert [len(d.embedding) for d in r.data] == [16, 16]
    assert r.usage.prompt_tokens == 3
    assert raw.headers["x-teegate-trust"] == "attested"
    assert raw.headers["x-teegate-receipt"].startswith("rcpt_")


def test_openai_legacy_completions(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="hello there",
                                                      max_tokens=6)
    done = raw.parse()
    assert done.choices[0].text
    assert raw.headers["x-teegate-trust"] == "attested"
    chunks = list(client.completions.create(model=MODEL, prompt="hello there", max_tokens=6,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == done.choices[0].text


def test_openai_models(client: openai.OpenAI) -> None:
    assert MODEL in [m.id for m in client.models.list()]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_openai_responses_plain_stream_and_stored(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model=MODEL, input="hello there",
                                                    max_output_tokens=64)
    r = raw.parse()
    assert r.status == "completed"
    assert r.output_text
    assert raw.headers["x-teegate-trust"] == "attested"
    assert client.responses.retrieve(r.id).output_text == r.output_text
    events = list(client.responses.create(model=MODEL, input="hello there",
                                          max_output_tokens=64, stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(getattr(e, "delta", "") for e in events
                   if e.type == "response.output_text.delta") == r.output_text
    chained = client.responses.create(model=MODEL, input="and then?",
                                      previous_response_id=r.id, max_output_tokens=8)
    assert chained.previous_response_id == r.id
    client.responses.delete(r.id)


def test_openai_agents_sdk_default_responses_model(served: Served) -> None:
    """The OpenAI Agents SDK with its default model (the Responses API), tracing off."""
    import agents
    agents.set_tracing_disabled(True)

    def fresh_client() -> None:  # an async client belongs to the event loop it ran on
        agents.set_default_openai_client(
            openai.AsyncOpenAI(base_url=served.base, api_key=served.key, max_retries=0),
            use_for_tracing=False)

    agents.set_default_openai_api("responses")
    agent = agents.Agent(name="helper", instructions="answer briefly", model=MODEL)
    fresh_client()
    result = agents.Runner.run_sync(agent, "say something")
    assert isinstance(result.final_output, str)
    assert result.final_output

    async def streamed() -> str:
        fresh_client()
        run = agents.Runner.run_streamed(agent, "say something")
        async for _ in run.stream_events():
            pass
        return str(run.final_output)

    import asyncio

    assert asyncio.run(streamed()) == result.final_output  # same input, same words


def test_langchain_openai(served: Served) -> None:
    import langchain_openai as lc
    from pydantic import SecretStr

    key = SecretStr(served.key)
    chat = lc.ChatOpenAI(model=MODEL, base_url=served.base, api_key=key, max_retries=0,
                         max_completion_tokens=8)
    text = chat.invoke("hello").content
    assert isinstance(text, str)
    assert text
    assert "".join(str(c.content) for c in chat.stream("hello")) == text
    via_responses = lc.ChatOpenAI(model=MODEL, base_url=served.base, api_key=key,
                                  max_retries=0, use_responses_api=True)
    assert via_responses.invoke("hello").text
    emb = lc.OpenAIEmbeddings(model=MODEL, base_url=served.base, api_key=key,
                              check_embedding_ctx_length=False, max_retries=0)
    assert len(emb.embed_query("hello")) == 16


def test_litellm_as_a_client(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    import litellm
    common: dict[str, Any] = {"api_base": served.base, "api_key": served.key}
    r = litellm.completion(model="openai/" + MODEL, messages=[
        {"role": "user", "content": "hello"}], max_tokens=8, **common)
    text = r.choices[0].message.content
    assert text
    chunks = litellm.completion(model="openai/" + MODEL, messages=[
        {"role": "user", "content": "hello"}], max_tokens=8, stream=True, **common)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    e = litellm.embedding(model="openai/" + MODEL, input=["hello"], **common)
    assert len(e.data[0]["embedding"]) == 16
    t = litellm.text_completion(model="openai/" + MODEL, prompt="hello", max_tokens=5,
                                **common)
    assert t.choices[0].text

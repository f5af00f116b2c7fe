"""Ambiguous request framing and repeated credential headers, over raw sockets on loopback:
the gateway and the node answer 400 and close the connection, on every route, whatever
httptools would have made of the bytes."""

from __future__ import annotations

import json
import os
import socket

import pytest

from teegate.framing import framing_problem
from tests.gateway.conftest import GatewayFactory, Gw
from tests.gateway.loopback import Server

BODY = b'{"model":"gpt-plain","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'
CHUNKED = hex(len(BODY))[2:].encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n"


@pytest.fixture
def gw(make_gateway: GatewayFactory, plain_upstream: Server) -> Gw:
    return make_gateway([
        {"id": "plain", "platform": "open-ai", "base_url": plain_upstream.url + "/v1",
         "models": ["gpt-plain"]}], ledger=None)


def raw(port: int, data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Send ``data``, read one response: (status, headers, body, whether the server then
    closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            part = s.recv(65536)
            assert part, f"connection closed without an answer: {buf!r}"
            buf += part
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:])}
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            part = s.recv(65536)
            assert part
            body += part
        s.settimeout(2)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False
        return int(lines[0].split(" ")[1]), headers, body[:n], closed


def _post(path: str, key: str, framing: bytes, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\n").encode() + framing + b"\r\n" + body


# httptools (the gateway's server) accepts the first three itself; the last is refused by
# httptools but taken by h11 (the guard's unit test below covers it).
AMBIGUOUS = {
    "identity, chunked": (b"Transfer-Encoding: identity, chunked\r\n", CHUNKED),
    "gzip, chunked": (b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED),
    "two TE lines": (b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", CHUNKED),
    "TE and CL": (b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(BODY),
                  CHUNKED),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_the_gateway_refuses_ambiguous_framing(gw: Gw, case: str) -> None:
    framing, body = AMBIGUOUS[case]
    status, headers, out, closed = raw(gw.server.port, _post("/v1/chat/completions", gw.key,
                                                           framing, body))
    assert status == 400, out
    if case != "TE and CL":
        assert json.loads(out)["error"]["code"] == "ambiguous_framing"
        assert headers["x-should-retry"] == "false"
    assert closed  # the bytes after it are not read as another request


def test_a_plainly_framed_call_still_works(gw: Gw) -> None:
    for framing, body in ((b"Transfer-Encoding: chunked\r\n", CHUNKED),
                          (b"Content-Length: %d\r\n" % len(BODY), BODY)):
        status, _, out, _ = raw(gw.server.port, _post("/v1/chat/completions", gw.key, framing,
                                                      body))
        assert status == 200, out


def test_transfer_encoding_on_http_1_0_is_refused(gw: Gw) -> None:
    req = _post("/v1/chat/completions", gw.key, b"Transfer-Encoding: chunked\r\n", CHUNKED)
    status, _, out, _ = raw(gw.server.port, req.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    assert status == 400, out


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/admin/agents",
                                  "/v1/providers", "/v1/wallets/x", "/healthz"])
def test_the_gateway_refuses_a_repeated_authorization_header(gw: Gw, path: str) -> None:
    admin = os.environ["TG_TEST_ADMIN"]
    method = "POST" if path == "/v1/chat/completions" else "GET"
    # Either order: the valid key first or last must not decide who calls.
    for a, b in ((gw.key, admin), (admin, gw.key), ("wrong", gw.key)):
        req = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\n"
               f"Authorization: Bearer {b}\r\nContent-Length: {len(BODY)}\r\n\r\n").encode()
        status, _, out, closed = raw(gw.server.port, req + BODY)
        assert status == 400, (path, out)
        err = json.loads(out)["error"]
        assert (err["code"], err["param"]) == ("duplicate_header", "authorization")
        assert closed


def test_a_repeated_conversation_or_host_header_is_refused(gw: Gw) -> None:
    for extra in (b"X-Teegate-Conversation: a\r\nX-Teegate-Conversation: b\r\n",
                  b"Host: y\r\n"):
        req = _post("/v1/chat/completions", gw.key, extra + b"Content-Length: %d\r\n"
                    % len(BODY), BODY)
        status, _, out, _ = raw(gw.server.port, req)
        assert status == 400, out
        assert json.loads(out)["error"]["code"] == "duplicate_header"


def test_the_node_refuses_ambiguous_framing_and_repeated_authorization(node_a: Server
                                                                       ) -> None:
    for framing, body in AMBIGUOUS.values():
        status, _, out, closed = raw(node_a.port, _post("/v1/chat/completions", "k", framing,
                                                        body))
        assert status == 400, out
        assert closed
    req = (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\n"
           b"Authorization: Bearer b\r\n\r\n")
    status, _, out, _ = raw(node_a.port, req)
    assert status == 400, out
    status, _, out, _ = raw(node_a.port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, out


@pytest.mark.parametrize(("headers", "version", "expected"), [
    ([(b"transfer-encoding", b"chunked")], "1.1", None),
    ([(b"content-length", b"5")], "1.1", None),
    ([(b"transfer-encoding", b"Chunked ")], "1.1", None),
    ([(b"transfer-encoding", b"chunked, chunked")], "1.1", "transfer-encoding"),
    ([(b"transfer-encoding", b"identity")], "1.1", "transfer-encoding"),
    ([(b"content-length", b"5"), (b"content-length", b"5")], "1.1", "content-length"),
    ([(b"content-length", b"+5")], "1.1", "content-length"),
    ([(b"transfer-encoding", b"chunked"), (b"content-length", b"5")], "1.1", "content-length"),
    ([(b"transfer-encoding", b"chunked")], "1.0", "transfer-encoding"),
])
def test_framing_rules(headers: list[tuple[bytes, bytes]], version: str,
                       expected: str | None) -> None:
    scope = {"headers": [(b"host", b"x"), *headers], "http_version": version}
    problem = framing_problem(scope)
    assert (problem[1] if problem else None) == expected
    assert framing_problem({"headers": [], "http_version": "1.1"}) == (
        "an HTTP/1.1 request needs a Host header", "host")

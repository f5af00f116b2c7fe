"""Deterministic, structure-aware mutation of real input files, for the crash fuzz tests.

Flipping bytes of a PEM or hex file mostly breaks its encoding, which the first parser
rejects; the crashes live one layer down. So besides raw byte edits, a mutation may decode a
PEM block, a hex or base64 run, or a JSON document, edit what is inside (a certificate's DER,
a CRL, a quote, a string value) and encode it again. Seeded ``random.Random``: a failure names
its seed and replays exactly. ``TEEGATE_FUZZ_SCALE`` multiplies the number of cases.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import re
from typing import Any

SCALE = max(1, int(os.environ.get("TEEGATE_FUZZ_SCALE", "1")))

_PEM = re.compile(rb"(-----BEGIN [A-Z0-9 ]+-----)(.+?)(-----END [A-Z0-9 ]+-----)", re.S)
_HEX = re.compile(rb"[0-9a-fA-F]{64,}")
_B64 = re.compile(rb"[A-Za-z0-9+/]{80,}={0,2}")
# Values a parser is least likely to expect: DER tags and lengths, sign bits, bad UTF-8.
_SPECIAL = (0x00, 0x01, 0x02, 0x05, 0x30, 0x7F, 0x80, 0x81, 0xFF)
_BAD_UTF8 = (b"\xff\xfe", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x00")
_ODD_JSON: tuple[Any, ...] = (None, 0, -1, 2**70, 1.5, "", [], {}, True, "zz", "00" * 48)


def edit_bytes(data: bytes, r: random.Random) -> bytes:
    """One raw edit: bit flips, special bytes, deletion, insertion, truncation, copying."""
    if not data:
        return bytes([r.randrange(256)])
    a = bytearray(data)
    op = r.randrange(8)
    i = r.randrange(len(a))
    if op == 0:
        for _ in range(r.randint(1, 4)):
            a[r.randrange(len(a))] ^= 1 << r.randrange(8)
    elif op == 1:
        for _ in range(r.randint(1, 4)):
            a[r.randrange(len(a))] = r.choice(_SPECIAL)
    elif op == 2:
        del a[i : i + r.randint(1, 32)]
    elif op == 3:
        a[i:i] = r.randbytes(r.randint(1, 16))
    elif op == 4:
        del a[i:]
    elif op == 5:
        j = r.randrange(len(a))
        n = r.randint(1, 64)
        a[i : i + n] = a[j : j + n]
    elif op == 6:
        a[i] = (a[i] + r.choice((1, -1, 2, -2))) % 256
    else:
        a[i:i] = r.choice(_BAD_UTF8)
    return bytes(a)


def _edit_pem(data: bytes, r: random.Random) -> bytes | None:
    blocks = list(_PEM.finditer(data))
    if not blocks:
        return None
    m = r.choice(blocks)
    try:
        der = base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    body = base64.b64encode(edit_bytes(der, r))
    lines = b"".join(body[k : k + 64] + b"\n" for k in range(0, len(body), 64))
    return data[: m.start(2)] + b"\n" + lines + data[m.end(2) :]


def _edit_hex(data: bytes, r: random.Random) -> bytes | None:
    runs = list(_HEX.finditer(data))
    if not runs:
        return None
    m = r.choice(runs)
    text = m.group(0)[: len(m.group(0)) // 2 * 2]
    return data[: m.start()] + edit_bytes(bytes.fromhex(text.decode()), r).hex().encode() \
        + data[m.start() + len(text) :]


def _edit_b64(data: bytes, r: random.Random) -> bytes | None:
    runs = list(_B64.finditer(data))
    if not runs:
        return None
    m = r.choice(runs)
    try:
        raw = base64.b64decode(m.group(0) + b"==")
    except (binascii.Error, ValueError):
        return None
    return data[: m.start()] + base64.b64encode(edit_bytes(raw, r)) + data[m.end() :]


def _edit_json(data: bytes, r: random.Random) -> bytes | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return json.dumps(edit_json(doc, r)).encode()


def edit_json(doc: Any, r: random.Random) -> Any:
    """Replace, edit or drop one value anywhere in a JSON document (strings are mutated as
    bytes, so hex, base64 and PEM inside strings are reached too)."""
    paths: list[list[Any]] = []

    def walk(node: Any, path: list[Any]) -> None:
        paths.append(path)
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        for key, child in items:
            walk(child, [*path, key])

    walk(doc, [])
    path = r.choice(paths)
    parent, node = None, doc
    for key in path:
        parent, node = node, node[key]
    op = r.randrange(5)
    if isinstance(node, str) and op < 3:
        new: Any = mutate(node.encode("utf-8", "surrogatepass"), r).decode("utf-8", "replace")
    elif op == 3:
        new = r.choice(_ODD_JSON)
    elif isinstance(node, dict) and node:
        new = {k: v for k, v in node.items() if k != r.choice(list(node))}
    else:
        new = node
    if parent is None:
        return new
    parent[path[-1]] = new
    return doc


def mutate(data: bytes, r: random.Random) -> bytes:
    """One mutation, structure-aware when the data has structure to reach into."""
    layer = r.randrange(10)
    edit = (_edit_pem if layer < 3 else _edit_hex if layer < 5 else _edit_b64 if layer < 6
            else _edit_json if layer < 8 else None)
    out = edit(data, r) if edit is not None else None
    return out if out is not None else edit_bytes(data, r)


def mutants(data: bytes, seed: int, count: int) -> list[bytes]:
    """``count`` mutants of ``data`` (one to three mutations each), the same for one seed."""
    r = random.Random(seed)
    out = []
    for _ in range(count):
        m = data
        for _ in range(r.choice((1, 1, 1, 2, 3))):
            m = mutate(m, r)
        out.append(m)
    return out

"""Any change to a valid bundle's receipt or proof is rejected, and never crashes the audit."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.errors import TeegateError
from teegate.receipts import ReceiptLog, make_bundle, parse_bundle
from teegate.receipts.audit import audit_bundle
from teegate.receipts.bundle import TlogProof
from teegate.receipts.note import NoteVerifier
from teegate.receipts.receipt import jcs

from .conftest import ORIGIN, make_receipt

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.text(max_size=8),
              st.floats(allow_nan=True)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], NoteVerifier]:
    tmp = tmp_path_factory.mktemp("fuzz")
    log = ReceiptLog(f"sqlite:///{Path(tmp) / 'f.db'}", origin=ORIGIN,
                     key=Ed25519PrivateKey.generate(), checkpoint_interval=0)
    try:
        for i in range(6):
            log.submit(make_receipt(i))
        p = log.prove("rcpt_000003")
        assert p is not None
        b = make_bundle(p.receipt.document, TlogProof(p.index, p.proof, p.checkpoint.note))
        return b, log.verifier
    finally:
        log.close()


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _audit(b: dict[str, Any], v: NoteVerifier) -> Any:
    try:
        bundle = parse_bundle(json.dumps(b))
    except TeegateError:
        return None  # rejected as malformed: fine
    return audit_bundle(bundle, "fuzz", log_verifiers=[v], receipt_keys=[])


def test_the_unchanged_bundle_holds(valid: tuple[dict[str, Any], NoteVerifier]) -> None:
    b, v = valid
    rep = _audit(b, v)
    assert rep.holds(allow_skipped=True), rep.to_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changed_receipt_never_holds(
    valid: tuple[dict[str, Any], NoteVerifier], data: st.DataObject
) -> None:
    b, v = valid
    paths = [p for p in _paths(b["receipt"]) if p]
    path = data.draw(st.sampled_from(paths))
    new = data.draw(_json)
    mutated = copy.deepcopy(b)
    node = mutated["receipt"]
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = new
    try:
        same = jcs(mutated["receipt"]) == jcs(b["receipt"])
    except TeegateError:
        same = False
    rep = _audit(mutated, v)  # must not raise anything but a typed error inside
    if rep is not None and not same:
        assert not rep.holds(allow_skipped=True), (path, new, rep.to_json())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_changed_proof_text_never_holds(
    valid: tuple[dict[str, Any], NoteVerifier], data: st.DataObject
) -> None:
    b, v = valid
    text: str = b["tlog_proof"]
    i = data.draw(st.integers(0, len(text) - 1))
    ch = data.draw(st.characters(codec="utf-8"))
    if ch == text[i]:
        return
    mutated = dict(b, tlog_proof=text[:i] + ch + text[i + 1 :])
    rep = _audit(mutated, v)
    if rep is not None:
        assert not rep.holds(allow_skipped=True), (i, ch, rep.to_json())

from __future__ import annotations

from teegate.node.signer import SignedText
from teegate.node.store import SignatureStore


def _sig(n: int) -> dict[str, SignedText]:
    return {"ecdsa": SignedText(f"t{n}", "s", "a", "ecdsa")}


def test_lookup_by_id_and_algo() -> None:
    store = SignatureStore()
    store.put("chatcmpl-1", _sig(1))
    assert store.get("chatcmpl-1", "ecdsa") == _sig(1)["ecdsa"]
    assert store.get("chatcmpl-1", "ed25519") is None
    assert store.get("chatcmpl-2", "ecdsa") is None


def test_entries_expire_after_ttl() -> None:
    now = [1000.0]
    store = SignatureStore(ttl=10, clock=lambda: now[0])
    store.put("a", _sig(1))
    now[0] += 9.9
    assert store.get("a", "ecdsa") is not None
    now[0] += 0.2
    assert store.get("a", "ecdsa") is None
    assert len(store) == 0


def test_count_is_bounded_oldest_evicted() -> None:
    store = SignatureStore(max_entries=3)
    for i in range(5):
        store.put(f"id{i}", _sig(i))
    assert len(store) == 3
    assert store.get("id0", "ecdsa") is None
    assert store.get("id1", "ecdsa") is None
    assert store.get("id4", "ecdsa") is not None


def test_expired_entries_are_pruned_on_put() -> None:
    now = [0.0]
    store = SignatureStore(ttl=5, clock=lambda: now[0])
    for i in range(10):
        store.put(f"id{i}", _sig(i))
    now[0] = 6.0
    store.put("fresh", _sig(99))
    assert len(store) == 1


def test_a_text_alone_is_signed_on_demand_and_kept() -> None:
    store = SignatureStore()
    store.put_text("s1", "req:resp")
    assert store.text("s1") == "req:resp"
    assert store.get("s1", "ecdsa") is None
    store.add("s1", SignedText("req:resp", "sig", "a", "ecdsa"))
    assert store.get("s1", "ecdsa") == SignedText("req:resp", "sig", "a", "ecdsa")
    store.add("s1", SignedText("other", "sig", "a", "ed25519"))  # not over this text
    assert store.get("s1", "ed25519") is None

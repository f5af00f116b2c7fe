"""dstack event logs: replay RTMR0-3, check the compose hash, extract the app identity.

A dstack event log (JSON array of ``{imr, event_type, digest, event, event_payload}``) explains
the TD's runtime measurement registers. Replay starts every RTMR at 48 zero bytes and extends
``rtmr = sha384(rtmr || digest)`` per event. Boot-event digests are taken as given (their
payloads may be stripped); runtime events (imr 3, type 0x08000001) have their digests
recomputed from name and payload, because newer guest agents strip them and because a digest
the verifier did not compute proves nothing about the payload (REFERENCE §5.3, §5.4). RTMR3
holds runtime events only, and a runtime event's stated digest must match its payload: a
relabelled event would otherwise keep a given digest and hide from the identity scan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from eth_hash.auto import keccak

from teegate import safejson
from teegate.attest.guard import malformed
from teegate.attest.policy import Policy
from teegate.attest.verdict import Check
from teegate.errors import EvidenceError

__all__ = [
    "RUNTIME_EVENT_TYPE",
    "Event",
    "check_event_log",
    "dstack_identity",
    "parse_event_log",
    "replay_rtmrs",
    "runtime_digest",
]

RUNTIME_EVENT_TYPE = 0x08000001
MAX_EVENTS = 4096
MAX_EVENT_LOG_BYTES = 8 << 20
"""A JSON event log's size limit: 4,096 events of 2 KiB each (real logs are tens of KB; the
JSON form of the largest binary CCEL accepted, ``ccel.MAX_CCEL_SIZE``, fits)."""
_MAX_FIELDS = 16  # values per event the pre-parse bound allows (dstack events have 5-7)
_ZERO = bytes(48)
# Runtime events dstack's system setup emits before ``system-ready``; later events with these
# names come from the app and do not define the identity.
_IDENTITY_EVENTS = {
    "compose-hash": "compose_hash",
    "app-id": "app_id",
    "instance-id": "instance_id",
    "os-image-hash": "os_image_hash",
    "key-provider": "key_provider",
    "rootfs-hash": "rootfs_hash",
}


@dataclass(frozen=True, slots=True)
class Event:
    imr: int
    event_type: int
    digest: bytes
    event: str
    payload: bytes
    # dstack runtime-event format version (1, or 2 for JCS-hashed events) and the V2 preimage.
    version: int = 1
    preimage: str | None = None

    @property
    def is_runtime(self) -> bool:
        return self.imr == 3 and self.event_type == RUNTIME_EVENT_TYPE


def _hex(value: Any, where: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise EvidenceError(f"event log {where} must be a hex string")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise EvidenceError(f"event log {where} is not hex") from None


def _int(value: Any, where: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise EvidenceError(f"event log {where} must be an integer in 0..{limit}")
    return value


def _event(item: Any, i: int) -> Event:
    if not isinstance(item, Mapping):
        raise EvidenceError(f"event log entry {i} is not an object")
    imr = _int(item.get("imr"), f"entry {i} imr", 3)
    event_type = _int(item.get("event_type"), f"entry {i} event_type", 0xFFFFFFFF)
    digest = _hex(item.get("digest"), f"entry {i} digest")
    if len(digest) > 48:
        raise EvidenceError(f"event log entry {i} digest is {len(digest)} bytes (at most 48)")
    name = item.get("event", "")
    if not isinstance(name, str):
        raise EvidenceError(f"event log entry {i} event name must be a string")
    payload = _hex(item.get("event_payload", item.get("payload")), f"entry {i} event_payload")
    version = item.get("version", 1)
    if version not in (1, 2) or isinstance(version, bool):
        raise EvidenceError(f"event log entry {i} has unknown version {version!r}")
    preimage = item.get("preimage")
    if preimage is not None and not isinstance(preimage, str):
        raise EvidenceError(f"event log entry {i} preimage must be a string")
    ev = Event(imr, event_type, digest, name, payload, version, preimage)
    if not ev.is_runtime and not digest:
        raise EvidenceError(f"event log entry {i} (imr {imr}) has no digest to replay")
    return ev


@malformed("the event log")
def parse_event_log(data: str | bytes | list[Any]) -> list[Event]:
    """Parse the dstack JSON event log (a JSON text or an already-decoded list), or a binary
    CCEL (``teegate.attest.ccel``), whose boot events explain RTMR0-2."""
    if isinstance(data, (bytes, bytearray)) and data[4:8] == b"\x03\0\0\0":
        from teegate.attest.ccel import ParsedCcel, is_ccel, parse_ccel

        if isinstance(data, ParsedCcel):  # parsed and checked when the file was read
            return list(data.events)
        if is_ccel(bytes(data)):
            return parse_ccel(bytes(data))
    items: Any = data
    if isinstance(data, (str, bytes, bytearray)):
        # Refused by size and by how many values it holds before it is parsed: 300,000
        # events would cost gigabytes as Python objects before the count below saw them.
        if len(data) > MAX_EVENT_LOG_BYTES:
            raise EvidenceError(f"event log is {len(data)} bytes (limit "
                                f"{MAX_EVENT_LOG_BYTES})")
        try:
            items = safejson.loads(data, max_values=MAX_EVENTS * _MAX_FIELDS + 1)
        except safejson.TooLargeError:
            raise EvidenceError(f"event log holds more values than {MAX_EVENTS} events "
                                f"can (limit {MAX_EVENTS} events)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvidenceError(f"event log is not JSON: {e}") from None
        if isinstance(items, str):  # some APIs double-encode the log
            return parse_event_log(items)
    if not isinstance(items, list):
        raise EvidenceError("event log must be a JSON array of events")
    if len(items) > MAX_EVENTS:
        raise EvidenceError(f"event log has {len(items)} events (limit {MAX_EVENTS})")
    return [_event(item, i) for i, item in enumerate(items)]


def v2_preimage(event: Event) -> str:
    """The JCS text a V2 runtime event's digest is computed over."""
    body: Any = {"name": event.event, "payload": event.payload.hex(), "type": event.event_type}
    return rfc8785.dumps(body).decode()


def runtime_digest(event: Event) -> bytes:
    """Digest of a runtime event recomputed from its name and payload."""
    if event.version == 2:
        return hashlib.sha384(v2_preimage(event).encode()).digest()
    head = event.event_type.to_bytes(4, "little") + b":" + event.event.encode() + b":"
    return hashlib.sha384(head + event.payload).digest()


@malformed("the event log")
def replay_rtmrs(events: Sequence[Event]) -> tuple[bytes, bytes, bytes, bytes]:
    """RTMR0..3 as the events extend them (runtime digests recomputed from payloads)."""
    regs = [_ZERO, _ZERO, _ZERO, _ZERO]
    for ev in events:
        digest = runtime_digest(ev) if ev.is_runtime else ev.digest.ljust(48, b"\0")
        regs[ev.imr] = hashlib.sha384(regs[ev.imr] + digest).digest()
    return (regs[0], regs[1], regs[2], regs[3])


def _payload_text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.hex()


def dstack_identity(events: Sequence[Event]) -> tuple[dict[str, str], list[str]]:
    """(identity, problems): compose_hash, app_id, instance_id, os_image_hash, key_provider
    from the system events before ``system-ready``; a repeated identity event is a problem."""
    identity: dict[str, str] = {}
    problems: list[str] = []
    for ev in events:
        if not ev.is_runtime:
            continue
        if ev.event == "system-ready":
            break
        key = _IDENTITY_EVENTS.get(ev.event)
        if key is None:
            continue
        value = _payload_text(ev.payload) if key == "key_provider" else ev.payload.hex()
        if key in identity:
            problems.append(f"event {ev.event!r} appears more than once")
        identity[key] = value
    return identity, problems


def _register(measurements: Mapping[str, str], name: str) -> bytes | None:
    value = measurements.get(name)
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _in(value: str | None, allowed: frozenset[str]) -> bool:
    return value is not None and value in allowed


@malformed("the event log")
def check_event_log(
    measurements: Mapping[str, str],
    events: Sequence[Event],
    *,
    policy: Policy,
    app_compose: bytes | None,
) -> tuple[list[Check], dict[str, str]]:
    """Replay ``events`` against the quote's RTMRs and check the dstack identity they carry.

    ``measurements`` are the verified quote's (hex ``rtmr0``..``rtmr3``, ``mrconfigid``).
    Returns the checks and the identity (compose_hash, app_id, instance_id, os_image_hash,
    key_provider) — the identity is only meaningful when every ``eventlog.rtmr*`` check passed.
    """
    checks: list[Check] = []
    dpol = policy.dstack
    if not events:
        if dpol.require_event_log:
            checks.append(Check("eventlog.present", False,
                                "the policy requires a dstack event log and there is none"))
        identity: dict[str, str] = {}
    else:
        replayed = replay_rtmrs(events)
        for i, reg in enumerate(replayed):
            quoted = _register(measurements, f"rtmr{i}")
            ok = quoted == reg
            checks.append(Check(
                f"eventlog.rtmr{i}", ok,
                f"event log replays to RTMR{i} {reg.hex()[:16]}… as quoted" if ok else
                f"event log replays to {reg.hex()[:16]}… but the quote has RTMR{i} "
                f"{quoted.hex()[:16] if quoted else 'none'}…: the log does not describe this TD",
            ))
        # RTMR3 is extended only by dstack runtime events. Another event_type there would keep
        # its given digest (not recomputed) and hide from the identity scan, so an attacker
        # could relabel the real compose-hash / system-ready events and promote an app event.
        foreign = [f"#{i} {ev.event!r} (type {ev.event_type:#x})" for i, ev in enumerate(events)
                   if ev.imr == 3 and ev.event_type != RUNTIME_EVENT_TYPE]
        if foreign:
            checks.append(Check(
                "eventlog.event_type", False,
                f"RTMR3 events must be dstack runtime events (type {RUNTIME_EVENT_TYPE:#x}); "
                f"the log has {', '.join(foreign[:3])}" + (" …" if len(foreign) > 3 else "")
                + ": the log is not one dstack wrote"))
        wrong = [f"#{i} {ev.event!r}" for i, ev in enumerate(events)
                 if ev.is_runtime and ev.digest and ev.digest != runtime_digest(ev)]
        if wrong:
            checks.append(Check(
                "eventlog.digest", False,
                f"runtime event digest does not match its name and payload: {', '.join(wrong[:3])}"
                + (" …" if len(wrong) > 3 else "") + ": the log was altered"))
        bad_pre = [ev.event for ev in events
                   if ev.is_runtime and ev.version == 2 and ev.preimage is not None
                   and ev.preimage not in (v2_preimage(ev), v2_preimage(ev).encode().hex())]
        if bad_pre:
            checks.append(Check("eventlog.preimage", False,
                                f"V2 event preimage does not match its payload: {bad_pre}"))
        identity, problems = dstack_identity(events)
        if problems:
            checks.append(Check("dstack.identity", False, "; ".join(problems)))
    checks.extend(_compose_checks(measurements, identity, policy, app_compose))
    for key, allowed, label in (
        ("app_id", dpol.app_ids, "app ID"),
        ("os_image_hash", dpol.os_image_hashes, "OS image hash"),
    ):
        if allowed:
            value = identity.get(key)
            ok = _in(value, allowed)
            checks.append(Check(
                f"dstack.{key}", ok,
                f"{label} {value} is allowed by the policy" if ok else
                f"{label} {value or '(none in the event log)'} is not among the "
                f"{len(allowed)} the policy allows",
            ))
    return checks, identity


def _compose_checks(
    measurements: Mapping[str, str], identity: Mapping[str, str], policy: Policy,
    app_compose: bytes | None,
) -> list[Check]:
    checks: list[Check] = []
    event_hash = identity.get("compose_hash")
    doc_hash = hashlib.sha256(app_compose).hexdigest() if app_compose is not None else None
    allowed = policy.dstack.compose_hashes
    mrconfigid = _register(measurements, "mrconfigid")
    config_hash: str | None = None
    if mrconfigid is not None and mrconfigid[:1] == b"\x01" and not any(mrconfigid[33:]):
        config_hash = mrconfigid[1:33].hex()
    measured = event_hash or config_hash
    if allowed or doc_hash is not None:
        problems: list[str] = []
        if measured is None:
            problems.append("no compose hash is measured (no compose-hash event, MRCONFIGID "
                            "carries none)")
        if allowed and measured is not None and measured not in allowed:
            problems.append(f"compose hash {measured} is not among the {len(allowed)} the "
                            "policy allows")
        if doc_hash is not None and measured is not None and doc_hash != measured:
            problems.append(f"the app-compose document hashes to {doc_hash}, the TD measured "
                            f"{measured}: this is not the compose the TD runs")
        checks.append(Check(
            "dstack.compose_hash", not problems, "; ".join(problems) if problems else
            f"compose hash {measured} is measured" + (
                " and matches the app-compose document" if doc_hash else "") + (
                " and allowed by the policy" if allowed else ""),
        ))
    if mrconfigid is not None and (identity or doc_hash is not None or allowed):
        check = _mrconfigid_check(mrconfigid, identity, event_hash or doc_hash, doc_hash,
                                  asked=doc_hash is not None or bool(allowed))
        if check is not None:
            checks.append(check)
    return checks


# dstack's key provider kinds, as the byte MRCONFIGID v2 hashes (dstack-types mr_config.rs) and
# the names its key-provider event carries.
_KEY_PROVIDER_KINDS = {"none": 0, "local-sgx": 1, "local": 1, "kms": 2, "tpm": 3}


def mrconfigid_v2(compose_hash: bytes, app_id: bytes, key_provider: str,
                  key_provider_id: bytes) -> bytes:
    """dstack MRCONFIGID v2: 0x02 || keccak256(compose hash || app id || kind || provider id),
    zero padded to 48 bytes."""
    kind = _KEY_PROVIDER_KINDS[key_provider]
    digest = bytes(keccak(compose_hash + app_id + bytes([kind]) + key_provider_id))
    return (b"\x02" + digest).ljust(48, b"\0")


def _key_provider(identity: Mapping[str, str]) -> tuple[str, bytes] | None:
    """(name, id) from the key-provider event's JSON ``{"name", "id"}``; None if unreadable."""
    text = identity.get("key_provider")
    if text is None:
        return None
    try:
        doc = safejson.loads(text)
        name, ident = doc["name"], doc["id"]
        if not isinstance(name, str) or not isinstance(ident, str) \
                or name not in _KEY_PROVIDER_KINDS:
            return None
        return name, bytes.fromhex(ident)
    except (ValueError, TypeError, KeyError):
        return None


def _mrconfigid_check(mrconfigid: bytes, identity: Mapping[str, str], want: str | None,
                      doc_hash: str | None, *, asked: bool) -> Check | None:
    """``dstack.mrconfigid`` for each layout dstack ships (dstack-util config_id_verifier.rs):
    zero (before 0.5.1), v1 0x01 || compose hash, v2 0x02 || keccak256(compose hash, app id,
    key provider kind, key provider id) recomputed from the replayed events, v3 0x03 ||
    sha256 of dstack's mr_config document (not in the event log)."""
    version, body, tail = mrconfigid[0], mrconfigid[1:33], mrconfigid[33:]
    event_hash = identity.get("compose_hash")
    if not any(mrconfigid):
        if not asked:  # a compose was asked for (document or policy): say what binds it
            return None
        return Check(
            "dstack.mrconfigid", event_hash is not None,
            "MRCONFIGID is zero (dstack before 0.5.1): the compose is bound only by the RTMR3 "
            "compose-hash event" if event_hash else
            "MRCONFIGID is zero and no compose-hash event was replayed: nothing binds the "
            "compose")
    if version not in (1, 2, 3) or any(tail):
        return Check("dstack.mrconfigid", False,
                     f"MRCONFIGID {mrconfigid.hex()[:18]}… is in no dstack layout (zero, 0x01 "
                     "|| compose hash, 0x02 || keccak256(app info), 0x03 || document hash, "
                     "zero padded): it does not bind the dstack compose")
    if version == 1:
        if want is None:
            return None
        ok = body.hex() == want and (doc_hash is None or doc_hash == body.hex())
        return Check("dstack.mrconfigid", ok, f"MRCONFIGID = 0x01 || {body.hex()}"
                     + ("" if ok else f", but the compose hash is {want}"))
    if version == 3:
        return Check(
            "dstack.mrconfigid", event_hash is not None,
            "MRCONFIGID v3 (0x03 || sha256 of dstack's mr_config document): the document is "
            "not in the event log, so it is not compared; the compose is bound by the RTMR3 "
            "compose-hash event" if event_hash else
            "MRCONFIGID v3 binds an mr_config document that is not in the event log, and no "
            "compose-hash event was replayed: nothing here binds the compose")
    app_id, provider = identity.get("app_id"), _key_provider(identity)
    if event_hash is None or app_id is None or provider is None:
        missing = [n for n, v in (("compose-hash", event_hash), ("app-id", app_id),
                                  ("key-provider {name, id}", provider)) if v is None]
        return Check("dstack.mrconfigid", False,
                     f"MRCONFIGID v2 is keccak256 over the compose hash, app id and key "
                     f"provider, and the event log has no usable {', '.join(missing)} event: "
                     "it cannot be recomputed")
    try:
        expected = mrconfigid_v2(bytes.fromhex(event_hash), bytes.fromhex(app_id), *provider)
    except ValueError:
        return Check("dstack.mrconfigid", False,
                     "MRCONFIGID v2: the event log's compose hash or app id is not hex")
    ok = expected == mrconfigid and (doc_hash is None or doc_hash == event_hash)
    name = provider[0]
    return Check(
        "dstack.mrconfigid", ok,
        f"MRCONFIGID = 0x02 || keccak256(compose hash {event_hash[:16]}…, app id {app_id}, "
        f"key provider {name} {provider[1].hex()[:16]}…), recomputed from the event log" if ok
        else f"MRCONFIGID {mrconfigid.hex()[:18]}… is not the v2 value {expected.hex()[:18]}… "
             f"recomputed from the event log (compose hash, app id, key provider {name})"
             + ("" if doc_hash is None or doc_hash == event_hash else
                "; the app-compose document is not the measured one"))

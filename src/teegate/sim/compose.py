"""The development TDX measures an app compose the way dstack does.

dstack's system setup extends RTMR3 with runtime events (``system-preparing``, ``app-id``,
``compose-hash`` = SHA-256 of the raw app-compose file, ``instance-id``, ``boot-mr-done``,
``os-image-hash``, ``key-provider``, ``system-ready``) and, from 0.5.1, puts ``0x01 ||
compose hash`` in MRCONFIGID (REFERENCE §5.4). ``measure_compose`` builds that event log for a
compose, plus one boot event per RTMR0-2 so the whole log replays to the quoted registers, and
a development OS image whose ``metadata.json`` says ``is_dev`` (the image is simulated: a
verifier must refuse it unless its policy allows development images).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from teegate.attest.eventlog import RUNTIME_EVENT_TYPE, Event, replay_rtmrs, runtime_digest

__all__ = ["DEFAULT_APP_COMPOSE", "MeasuredCompose", "dev_os_image", "measure_compose"]

_EV_EVENT_TAG = 0x6  # TCG EV_EVENT_TAG: the kind the simulated boot events are logged as
DEV_OS_VERSION = "teegate-dev-0.1"

DEFAULT_APP_COMPOSE = json.dumps({
    "manifest_version": 2,
    "name": "teegate-builtin",
    "runner": "docker-compose",
    "docker_compose_file": (
        "services:\n"
        "  teegate-node:\n"
        "    image: teegate-node:development\n"
        "    command: teegate node --engine builtin --tee dstack\n"
        "    environment:\n"
        "      - TEEGATE_MODEL=teegate-builtin\n"
    ),
    "kms_enabled": False,
    "gateway_enabled": False,
    "local_key_provider_enabled": False,
    "no_instance_id": False,
}, indent=2).encode()
"""The compose the embedded default measures: the built-in engine (its image is a tag, not a
digest, so a policy pinning image digests refuses it, as it should)."""


def dev_os_image() -> dict[str, str]:
    """The development OS image's hash list and metadata (``sha256sum`` and ``metadata``
    texts, as ``info.os_image`` carries them); ``os_image_hash`` = SHA-256 of the list."""
    metadata = json.dumps({"version": DEV_OS_VERSION, "is_dev": True,
                           "kernel": "simulated", "initrd": "simulated",
                           "rootfs": "simulated", "bios": "simulated"}, indent=2) + "\n"
    listing = f"{hashlib.sha256(metadata.encode()).hexdigest()}  metadata.json\n"
    return {"sha256sum": listing, "metadata": metadata}


@dataclass(frozen=True)
class MeasuredCompose:
    """What the development TD measured: registers, MRCONFIGID, the log explaining them."""

    app_compose: bytes
    compose_hash: str
    app_id: str
    instance_id: str
    os_image_hash: str
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    mrconfigid: bytes
    events: list[dict[str, Any]] = field(default_factory=list)
    os_image: dict[str, str] = field(default_factory=dict)

    @property
    def event_log(self) -> str:
        return json.dumps(self.events)

    def tcb_info(self, mrtd: bytes) -> dict[str, Any]:
        """``info.tcb_info`` as dstack's guest agent reports it."""
        return {"mrtd": mrtd.hex(), **{f"rtmr{i}": r.hex() for i, r in enumerate(self.rtmrs)},
                "app_compose": self.app_compose.decode("utf-8"),
                "compose_hash": self.compose_hash, "os_image_hash": self.os_image_hash,
                "event_log": self.events}


def _boot_event(imr: int) -> Event:
    digest = hashlib.sha384(f"teegate development boot RTMR{imr}".encode()).digest()
    return Event(imr, _EV_EVENT_TAG, digest, f"teegate-dev-boot-rtmr{imr}", b"")


def _runtime(name: str, payload: bytes) -> Event:
    ev = Event(3, RUNTIME_EVENT_TYPE, b"", name, payload)
    return Event(3, RUNTIME_EVENT_TYPE, runtime_digest(ev), name, payload)


def measure_compose(app_compose: bytes, *, instance_seed: bytes = b"teegate-dev") -> \
        MeasuredCompose:
    """The dstack measurements of ``app_compose`` (the raw file bytes, hashed as they are)."""
    compose_hash = hashlib.sha256(app_compose).digest()
    app_id = compose_hash[:20]
    instance_id = hashlib.sha256(instance_seed + app_id).digest()[:20]
    os_image = dev_os_image()
    os_image_hash = hashlib.sha256(os_image["sha256sum"].encode()).digest()
    key_provider = json.dumps({"name": "none", "id": ""}).encode()
    runtime = [("system-preparing", b""), ("app-id", app_id), ("compose-hash", compose_hash),
               ("instance-id", instance_id), ("boot-mr-done", b""),
               ("os-image-hash", os_image_hash), ("key-provider", key_provider),
               ("system-ready", b"")]
    events = [*(_boot_event(i) for i in range(3)), *(_runtime(n, v) for n, v in runtime)]
    rtmrs = replay_rtmrs(events)
    return MeasuredCompose(
        app_compose=app_compose, compose_hash=compose_hash.hex(), app_id=app_id.hex(),
        instance_id=instance_id.hex(), os_image_hash=os_image_hash.hex(), rtmrs=rtmrs,
        mrconfigid=(b"\x01" + compose_hash).ljust(48, b"\0"),
        events=[{"imr": e.imr, "event_type": e.event_type, "digest": e.digest.hex(),
                 "event": e.event, "event_payload": e.payload.hex()} for e in events],
        os_image=os_image,
    )

"""Guest POLICY and SIGNER_INFO bits that must not pass silently (signed development reports,
so only the bit under test differs from an accepted report)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from teegate.attest.policy import Policy
from teegate.attest.snp import verify_report
from teegate.sim import development_policy
from teegate.sim.snp import DEFAULT_POLICY, DevSnp

MIGRATE_MA = 1 << 18


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("snp-policy-bits")


@pytest.fixture(scope="module")
def snp(pki: Path) -> DevSnp:
    return DevSnp.load_or_create(pki)


@pytest.fixture(scope="module")
def policy(pki: Path) -> Policy:
    return development_policy(pki)


def _resign(snp: DevSnp, raw: bytearray) -> bytes:
    key: ec.EllipticCurvePrivateKey = snp._keys.vcek
    r, s = decode_dss_signature(key.sign(bytes(raw[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    raw[0x2A0:0x330] = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return bytes(raw)


def test_plain_development_report_is_accepted(snp: DevSnp, policy: Policy) -> None:
    v = verify_report(snp.report(bytes(64)), snp.cert_chain_pem(), policy=policy,
                      now=int(time.time()))
    assert v.accepted, v.failures
    check = v.check("snp.migrate_ma")
    assert check is not None
    assert check.ok


def test_migration_agent_allowed_by_guest_policy_is_rejected(snp: DevSnp,
                                                             policy: Policy) -> None:
    """A migration agent can move the guest, and its memory, to another host: the guest the
    report describes is then no longer confined to this attested platform (go-sev-guest
    rejects MIGRATE_MA unless the caller opts in)."""
    report = snp.report(bytes(64), policy=DEFAULT_POLICY | MIGRATE_MA)
    v = verify_report(report, snp.cert_chain_pem(), policy=policy, now=int(time.time()))
    assert not v.accepted
    assert [c.name for c in v.failures] == ["snp.migrate_ma"]


def test_signer_info_reserved_bits_are_rejected(snp: DevSnp, policy: Policy) -> None:
    raw = bytearray(snp.report(bytes(64)))
    struct.pack_into("<I", raw, 0x48, 1 << 5)  # VCEK, not masked, a must-be-zero bit set
    v = verify_report(_resign(snp, raw), snp.cert_chain_pem(), policy=policy,
                      now=int(time.time()))
    assert not v.accepted
    assert [c.name for c in v.failures] == ["snp.reserved"]
    failed = v.check("snp.reserved")
    assert failed is not None
    assert "SIGNER_INFO" in failed.detail


@pytest.mark.parametrize("offset", [0x1EB, 0x1EF])
def test_reserved_byte_after_build_numbers_is_rejected(snp: DevSnp, policy: Policy,
                                                       offset: int) -> None:
    raw = bytearray(snp.report(bytes(64)))
    raw[offset] = 1
    v = verify_report(_resign(snp, raw), snp.cert_chain_pem(), policy=policy,
                      now=int(time.time()))
    assert [c.name for c in v.failures] == ["snp.reserved"]

from __future__ import annotations

import shutil
import stat
import threading
from pathlib import Path

import pytest

from teegate.attest.policy import Policy
from teegate.errors import ConfigError
from teegate.sim import DevGpu, DevSnp, DevTdx, development_policy


def test_pki_persists_and_reloads(pki_dir: Path, dev_tdx: DevTdx, dev_snp: DevSnp,
                                  dev_gpu: DevGpu) -> None:
    assert DevTdx.load_or_create(pki_dir).root_pem == dev_tdx.root_pem
    assert DevSnp.load_or_create(pki_dir).ark_pem == dev_snp.ark_pem
    assert DevSnp.load_or_create(pki_dir).chip_id == dev_snp.chip_id
    assert DevGpu.load_or_create(pki_dir).root_pem == dev_gpu.root_pem
    assert DevGpu.load_or_create(pki_dir).cert_chain_pem(2) == dev_gpu.cert_chain_pem(2)
    assert sorted(p.name for p in pki_dir.iterdir()) == ["gpu", "snp", "tdx"]


def test_reloaded_keys_still_sign(pki_dir: Path, dev_tdx: DevTdx) -> None:
    import time

    import dcap_qvl

    again = DevTdx.load_or_create(pki_dir)
    now = int(time.time())
    col = dcap_qvl.QuoteCollateralV3.from_json(dev_tdx.collateral(now=now))
    assert dcap_qvl.verify_with_root_ca(again.quote(b"x"), col, dev_tdx.root_der, now).status \
        == "UpToDate"


def test_private_keys_are_0600_and_no_pem_is_a_private_key(
    pki_dir: Path, dev_tdx: DevTdx, dev_snp: DevSnp, dev_gpu: DevGpu
) -> None:
    keys = list(pki_dir.rglob("*.key"))
    assert len(keys) == 5 + 3 + 3 + 2 * dev_gpu.count
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert b"PRIVATE KEY" in key.read_bytes()
    for cert in pki_dir.rglob("*.pem"):
        assert b"PRIVATE" not in cert.read_bytes()


def test_each_installation_gets_its_own_pki(tmp_path: Path, dev_tdx: DevTdx) -> None:
    assert DevTdx.load_or_create(tmp_path).root_pem != dev_tdx.root_pem


def _fresh_tdx(tmp_path: Path) -> Path:
    DevTdx.load_or_create(tmp_path)
    return tmp_path / "tdx"


def test_garbage_key_is_config_error(tmp_path: Path) -> None:
    d = _fresh_tdx(tmp_path)
    (d / "pck.key").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match=r"unusable.*delete that directory"):
        DevTdx.load_or_create(tmp_path)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    d = _fresh_tdx(tmp_path)
    (d / "root.pem").unlink()
    with pytest.raises(ConfigError, match=r"root\.pem"):
        DevTdx.load_or_create(tmp_path)


def test_key_certificate_mismatch_is_config_error(tmp_path: Path) -> None:
    d = _fresh_tdx(tmp_path)
    shutil.copy(d / "pck_ca.pem", d / "pck.pem")
    with pytest.raises(ConfigError, match="does not hold the public key"):
        DevTdx.load_or_create(tmp_path)


def test_wrong_manifest_is_config_error(tmp_path: Path) -> None:
    d = _fresh_tdx(tmp_path)
    (d / "manifest.json").write_text('{"format": 1, "kind": "snp"}')
    with pytest.raises(ConfigError, match="manifest"):
        DevTdx.load_or_create(tmp_path)
    (d / "manifest.json").write_text("[")
    with pytest.raises(ConfigError, match="unusable"):
        DevTdx.load_or_create(tmp_path)


def test_world_readable_key_is_config_error(tmp_path: Path) -> None:
    d = _fresh_tdx(tmp_path)
    (d / "attestation.key").chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        DevTdx.load_or_create(tmp_path)


def test_corrupt_snp_and_gpu_directories_are_config_errors(
    tmp_path: Path, pki_dir: Path, dev_snp: DevSnp, dev_gpu: DevGpu
) -> None:
    shutil.copytree(pki_dir / "snp", tmp_path / "snp")
    shutil.copytree(pki_dir / "gpu", tmp_path / "gpu")
    (tmp_path / "snp" / "ark.key").write_bytes((pki_dir / "snp" / "vcek.key").read_bytes())
    (tmp_path / "gpu" / "leaf3.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    with pytest.raises(ConfigError, match="not an RSA private key"):
        DevSnp.load_or_create(tmp_path)
    with pytest.raises(ConfigError, match="unusable"):
        DevGpu.load_or_create(tmp_path)


def test_concurrent_first_use_yields_one_pki(tmp_path: Path) -> None:
    roots: list[str] = []
    threads = [threading.Thread(target=lambda: roots.append(
        DevTdx.load_or_create(tmp_path).root_pem)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(roots) == 4
    assert len(set(roots)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["tdx"]  # no temporary leftovers


def test_development_policy_adds_exactly_the_dev_roots(
    pki_dir: Path, dev_tdx: DevTdx, dev_snp: DevSnp, dev_gpu: DevGpu
) -> None:
    assert Policy.default().roots.intel == ()
    policy = development_policy(pki_dir)
    assert policy.roots.intel == (dev_tdx.root_pem,)
    assert policy.roots.amd == (dev_snp.ark_pem,)
    assert policy.roots.nvidia == (dev_gpu.root_pem,)
    assert policy.roots.nvidia_rim == ()
    assert policy.tcb == Policy.default().tcb


def test_development_policy_keeps_the_base_and_does_not_duplicate(pki_dir: Path,
                                                                 dev_tdx: DevTdx) -> None:
    base = Policy.from_mapping({"tcb": {"allowed_statuses": ["UpToDate"]},
                                "roots": {"intel": ["-----BEGIN CERTIFICATE-----x"]}})
    policy = development_policy(pki_dir, base)
    assert policy.tcb.allowed_statuses == frozenset({"UpToDate"})
    assert policy.roots.intel == ("-----BEGIN CERTIFICATE-----x", dev_tdx.root_pem)
    assert development_policy(pki_dir, policy).roots.intel == policy.roots.intel


def test_development_policy_defaults_to_the_installation_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki_dir: Path
) -> None:
    shutil.copytree(pki_dir, tmp_path / "dev-pki")  # avoid generating RSA-4096 again
    monkeypatch.setenv("TEEGATE_HOME", str(tmp_path))
    policy = development_policy()
    assert policy.roots.intel == (DevTdx.load_or_create(pki_dir).root_pem,)

from pathlib import Path

import pytest

from teegate.attest.policy import DEFAULT_TCB_STATUSES, Policy, load_policy
from teegate.errors import ConfigError


def test_default_policy_is_strict() -> None:
    p = Policy.default()
    assert p.tcb.allowed_statuses == DEFAULT_TCB_STATUSES == {"UpToDate", "SWHardeningNeeded"}
    assert not p.tcb.allow_debug
    assert p.binding.require_nonce
    assert p.roots.intel == ()
    assert p.roots.amd == ()
    assert p.roots.nvidia == ()


def test_toml_policy_loads_and_normalises_hex(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        '[tcb]\nallowed_statuses = ["UpToDate"]\nrejected_advisories = ["INTEL-SA-00615"]\n'
        '[tdx]\nmrtd = ["0xAABB"]\n[snp]\nmin_tcb = { snp = 8, microcode = 115 }\nvmpl = [0]\n'
        '[gpu]\nmode = "required"\n'
    )
    p = load_policy(f)
    assert p.tcb.allowed_statuses == {"UpToDate"}
    assert p.tdx.mrtd == {"aabb"}
    assert p.snp.min_tcb == {"snp": 8, "microcode": 115}
    assert p.gpu.mode == "required"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[tcb]\nallowed_status = ["UpToDate"]\n', "policy.tcb: unknown key"),
        ('[tdx]\nmrtd = ["zz"]\n', "policy.tdx.mrtd"),
        ('[tcb]\nallow_debug = "yes"\n', "policy.tcb.allow_debug"),
        ('[gpu]\nmode = "sometimes"\n', "policy.gpu.mode"),
        ('[snp]\nmin_tcb = { ucode = 1 }\n', "policy.snp.min_tcb"),
        ('[roots]\nintel = ["missing.pem"]\n', "policy.roots.intel"),
    ],
)
def test_bad_policy_names_the_field(tmp_path: Path, body: str, field: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        load_policy(f)


def test_json_policy_and_unreadable_file(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_text('{"dstack": {"compose_hashes": ["AB"]}}')
    assert load_policy(f).dstack.compose_hashes == {"ab"}
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "nope.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid json"):
        load_policy(bad)

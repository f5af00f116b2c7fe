"""One development PKI per test session: the SNP chain needs two RSA-4096 keys (~1 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.sim import DevGpu, DevSnp, DevTdx

DATA = Path(__file__).resolve().parent.parent / "data" / "sim"


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dev-pki")


@pytest.fixture(scope="session")
def dev_tdx(pki_dir: Path) -> DevTdx:
    return DevTdx.load_or_create(pki_dir)


@pytest.fixture(scope="session")
def dev_snp(pki_dir: Path) -> DevSnp:
    return DevSnp.load_or_create(pki_dir)


@pytest.fixture(scope="session")
def dev_gpu(pki_dir: Path) -> DevGpu:
    return DevGpu.load_or_create(pki_dir)

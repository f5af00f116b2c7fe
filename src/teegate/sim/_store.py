"""On-disk storage of a development PKI: one directory per TEE kind under the PKI directory.

Each kind lives in ``<pki dir>/<kind>/`` with ``manifest.json``, certificates (``*.pem``) and
private keys (``*.key``, PKCS#8 PEM, mode 0600). A new PKI is generated into a temporary
directory and renamed into place, so a crash or a concurrent process never leaves half a PKI
behind; whoever renames first wins and the other loads the winner's keys. Anything unreadable
becomes a ``ConfigError`` naming the directory, because silently regenerating would change the
roots a configured policy trusts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from teegate.errors import ConfigError

T = TypeVar("T")
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
FORMAT = 1


def load_or_create(
    directory: Path, kind: str, create: Callable[[Path], None], load: Callable[[Path], T]
) -> T:
    """Load ``directory/kind``, generating it with ``create`` first if it does not exist."""
    sub = directory / kind
    if not sub.exists() or (sub.is_dir() and not any(sub.iterdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=directory))
        except OSError as e:
            raise ConfigError(f"development PKI: cannot create {directory}: {e}") from e
        try:
            create(tmp)
            write_json(tmp / "manifest.json", {"format": FORMAT, "kind": kind})
            try:
                os.rename(tmp, sub)
            except OSError:
                if not (sub / "manifest.json").exists():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    try:
        manifest = read_json(sub / "manifest.json")
        if manifest.get("format") != FORMAT or manifest.get("kind") != kind:
            raise ValueError(f"manifest.json is not a {kind} PKI of format {FORMAT}")
        return load(sub)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, KeyError, UnsupportedAlgorithm) as e:
        raise ConfigError(
            f"development PKI in {sub} is unusable ({type(e).__name__}: {e}); "
            "delete that directory to generate a new development PKI"
        ) from e


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def read_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = _read_key(path)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path.name} is not an EC private key")
    return key


def read_rsa_key(path: Path) -> rsa.RSAPrivateKey:
    key = _read_key(path)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path.name} is not an RSA private key")
    return key


def _read_key(path: Path) -> Any:
    mode = path.stat().st_mode
    if mode & 0o077:
        raise ConfigError(
            f"development PKI key {path} is readable by other users (mode {mode & 0o777:o}); "
            "run chmod 600 on it"
        )
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def read_cert(path: Path, key: PrivateKey | None = None) -> x509.Certificate:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    if key is not None:
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        mine = key.public_key().public_bytes(serialization.Encoding.DER, fmt)
        theirs = cert.public_key().public_bytes(serialization.Encoding.DER, fmt)
        if mine != theirs:
            raise ValueError(f"{path.name} does not hold the public key of its private key")
    return cert


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def build_cert(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: Any,
    signing_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: list[tuple[x509.ExtensionType, bool]],
    hash_alg: hashes.HashAlgorithm,
    serial: int | None = None,
    rsa_pss: bool = False,
) -> x509.Certificate:
    """One X.509 v3 certificate; ``rsa_pss`` signs like AMD (RSA-PSS, MGF1 same hash,
    salt = digest length)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    if rsa_pss:
        pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
        return builder.sign(signing_key, hash_alg, rsa_padding=pss)
    return builder.sign(signing_key, hash_alg)


def ski(public_key: Any) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def aki(issuer_public_key: Any) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key)

"""An OCSP responder for the development GPU chain, so NVIDIA revocation checking runs end to
end without NVIDIA's responder: each certificate's status is signed by its issuer's key, as
NVIDIA's responder answers for its device CAs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from teegate.sim import _store
from teegate.sim.gpu import N_GPUS, DevGpu


class DevGpuOcsp:
    """Answers DER OCSP requests for the BROM, ICA and identity certificates of the
    development GPUs under ``directory`` (``DevGpu.load_or_create(directory)``). Serials in
    ``revoked`` are answered as revoked (key compromise)."""

    def __init__(self, directory: Path) -> None:
        DevGpu.load_or_create(directory)  # generate the PKI on first use
        path = Path(directory) / "gpu"
        keys = {n: _store.read_ec_key(path / f"{n}.key") for n in ("ica", "identity", "root")}
        certs = {n: _store.read_cert(path / f"{n}.pem") for n in ("ica", "identity", "root")}
        # (certificate, issuer certificate, issuer key) for everything a verifier asks about
        self._known: dict[int, tuple[x509.Certificate, x509.Certificate,
                                     ec.EllipticCurvePrivateKey]] = {
            certs["ica"].serial_number: (certs["ica"], certs["identity"], keys["identity"]),
            certs["identity"].serial_number: (certs["identity"], certs["root"], keys["root"]),
        }
        for i in range(N_GPUS):
            brom = _store.read_cert(path / f"brom{i}.pem")
            self._known[brom.serial_number] = (brom, certs["ica"], keys["ica"])
        self.revoked: set[int] = set()
        self.requests = 0

    def serials(self) -> list[int]:
        return list(self._known)

    def respond(self, der: bytes) -> bytes:
        self.requests += 1
        try:
            req = ocsp.load_der_ocsp_request(der)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        known = self._known.get(req.serial_number)
        if known is None:
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        cert, issuer, key = known
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        revoked = cert.serial_number in self.revoked
        b = ocsp.OCSPResponseBuilder().add_response(
            cert=cert, issuer=issuer, algorithm=hashes.SHA384(),
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=now - dt.timedelta(minutes=1), next_update=now + dt.timedelta(days=1),
            revocation_time=now - dt.timedelta(hours=1) if revoked else None,
            revocation_reason=x509.ReasonFlags.key_compromise if revoked else None,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        try:
            nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
        except x509.ExtensionNotFound:
            pass
        return b.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER)

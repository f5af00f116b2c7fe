"""Intel DCAP quotes (SGX v3, TDX v4 and v5) parsed into typed, immutable structures.

Parsing is the first of three steps (parse, verify, validate): it only turns bytes into
fields and rejects anything malformed with ``EvidenceError``. Every length field is walked and
bounds-checked here; nothing is trusted because it parsed. Layouts: Intel
``sgx_quote_4.h`` / ``sgx_quote_5.h``, dcap-qvl ``src/quote.rs`` (REFERENCE §2.1).
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from teegate.attest.guard import malformed
from teegate.errors import EvidenceError

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
# A real quote is about 5 KB; anything this large is not a quote.
MAX_QUOTE_SIZE = 1 << 20
TEE_TYPE_SGX = 0x00
TEE_TYPE_TDX = 0x81
ATT_KEY_ECDSA_P256 = 2
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
SGX_FLAG_DEBUG = 1 << 1

_SPACE = b" \t\r\n\v\f"


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    # Bytes 8..12: SGX v3 QE SVN and PCE SVN (u16 each); reserved (zero) in TDX quotes.
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, slots=True)
class TdReport:
    """TD report body: TDX 1.0 (584 B); the 1.5 fields are None unless body type 3."""

    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mrservicetd: bytes | None = None

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)

    @property
    def attributes(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.attributes & TD_ATTR_DEBUG)


@dataclass(frozen=True, slots=True)
class SgxReport:
    """SGX report body (``sgx_report_body_t``, 384 B): an enclave's or the QE's report."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(int.from_bytes(self.attributes[:8], "little") & SGX_FLAG_DEBUG)


@dataclass(frozen=True, slots=True)
class CertificationData:
    cert_type: int
    data: bytes

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM chain (PCK leaf, intermediate CA, root) when this is type 5."""
        return self.data if self.cert_type == CERT_TYPE_PCK_CHAIN else None


@dataclass(frozen=True, slots=True)
class SignatureData:
    """ECDSA quote signature data: the attestation key's signature over header + body, and the
    QE report (signed by the PCK key) that vouches for that attestation key."""

    signature: bytes
    attestation_key: bytes
    qe_report_raw: bytes
    qe_report: SgxReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification: CertificationData


@dataclass(frozen=True, slots=True)
class Quote:
    header: QuoteHeader
    # v5 body descriptor type (1 SGX, 2 TDX 1.0, 3 TDX 1.5); implied for v3 (1) and v4 (2).
    body_type: int
    td_report: TdReport | None
    sgx_report: SgxReport | None
    signature_data: SignatureData
    # Length of the region the attestation key signs: header (+ v5 descriptor) + body.
    signed_size: int
    # Bytes the quote occupies (header through certification data).
    size: int
    # Bytes after the quote: no signature covers them, so they are reported and ignored, as
    # dcap-qvl and go-tdx-guest (``QuoteV4.extra_bytes``) do. Test files often carry them.
    trailing: bytes = b""

    @property
    def tee(self) -> str:
        return "tdx" if self.header.tee_type == TEE_TYPE_TDX else "sgx"

    @property
    def report_data(self) -> bytes:
        body = self.td_report if self.td_report is not None else self.sgx_report
        assert body is not None
        return body.report_data

    @property
    def debug(self) -> bool:
        body = self.td_report if self.td_report is not None else self.sgx_report
        assert body is not None
        return body.debug

    @property
    def pck_chain_pem(self) -> bytes | None:
        return self.signature_data.certification.pck_chain_pem


@malformed("the TDX/SGX quote")
def _unbase64(text: bytes) -> bytes | None:
    """Base64 (standard, padding optional): how Azure, GCP's ITA client and Tinfoil carry
    quotes. Only text that decodes to something starting like a quote counts."""
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) >= 2 and raw[0] in (3, 4, 5) and raw[1] == 0 else None


def load_quote(data: bytes | bytearray | memoryview | str) -> bytes:
    """Raw quote bytes from binary, hex or base64 text (whitespace and a ``0x`` prefix
    tolerated).

    Only checks that the result starts like a DCAP quote; ``parse_quote`` does the rest.
    """
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise EvidenceError("quote text is neither binary nor hex") from None
    raw = bytes(data)
    if not (len(raw) >= 2 and raw[0] in (3, 4, 5) and raw[1] == 0):
        text = raw.translate(None, _SPACE)
        if text[:2] in (b"0x", b"0X"):
            text = text[2:]
        try:
            raw = bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            decoded = _unbase64(text)
            if decoded is None:
                raise EvidenceError("quote is neither a binary DCAP quote nor hex or base64 "
                                    "text") from None
            raw = decoded
    if len(raw) > MAX_QUOTE_SIZE:
        raise EvidenceError(f"quote is {len(raw)} bytes; a DCAP quote is at most {MAX_QUOTE_SIZE}")
    if len(raw) < HEADER_SIZE:
        raise EvidenceError(f"quote is {len(raw)} bytes, shorter than the 48-byte header")
    version, _, tee_type = struct.unpack_from("<HHI", raw, 0)
    if (version, tee_type) not in ((3, TEE_TYPE_SGX), (4, TEE_TYPE_TDX), (5, TEE_TYPE_TDX)):
        raise EvidenceError(
            f"not a DCAP quote: version {version}, TEE type {tee_type:#x} (expected SGX v3 or "
            "TDX v4/v5)"
        )
    return raw


class _Reader:
    """Bounds-checked little-endian reader over one region of the quote."""

    def __init__(self, data: bytes, start: int, end: int, what: str) -> None:
        self.data, self.pos, self.end, self.what = data, start, end, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise EvidenceError(
                f"quote truncated: {self.what} needs {n} bytes for {field} at offset {self.pos}, "
                f"only {max(self.end - self.pos, 0)} left"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")


def _header(raw: bytes) -> QuoteHeader:
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw, 0)
    if version not in (3, 4, 5):
        raise EvidenceError(f"unsupported quote version {version} (expected 3, 4 or 5)")
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise EvidenceError(f"unknown TEE type {tee_type:#x} (expected 0x0 SGX or 0x81 TDX)")
    if (version == 3) != (tee_type == TEE_TYPE_SGX):
        raise EvidenceError(f"quote version {version} does not go with TEE type {tee_type:#x}")
    if key_type != ATT_KEY_ECDSA_P256:
        raise EvidenceError(
            f"unsupported attestation key type {key_type} (only 2 = ECDSA-P256 is used)"
        )
    return QuoteHeader(version, key_type, tee_type, qe_svn, pce_svn, raw[12:28], raw[28:48])


def parse_sgx_report(body: bytes) -> SgxReport:
    if len(body) != SGX_REPORT_SIZE:
        raise EvidenceError(f"SGX report body must be {SGX_REPORT_SIZE} bytes, got {len(body)}")
    return SgxReport(
        cpu_svn=body[0:16],
        misc_select=int.from_bytes(body[16:20], "little"),
        isv_ext_prod_id=body[32:48],
        attributes=body[48:64],
        mrenclave=body[64:96],
        mrsigner=body[128:160],
        config_id=body[192:256],
        isv_prod_id=int.from_bytes(body[256:258], "little"),
        isv_svn=int.from_bytes(body[258:260], "little"),
        config_svn=int.from_bytes(body[260:262], "little"),
        isv_family_id=body[304:320],
        report_data=body[320:384],
    )


def _td_report(body: bytes) -> TdReport:
    f = [body[o : o + n] for o, n in (
        (0, 16), (16, 48), (64, 48), (112, 8), (120, 8), (128, 8), (136, 48), (184, 48),
        (232, 48), (280, 48), (328, 48), (376, 48), (424, 48), (472, 48), (520, 64),
    )]
    v15 = len(body) == TD_REPORT15_SIZE
    return TdReport(
        f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], f[13],
        f[14],
        tee_tcb_svn2=body[584:600] if v15 else None,
        mrservicetd=body[600:648] if v15 else None,
    )


def _body(raw: bytes, header: QuoteHeader) -> tuple[int, int, int]:
    """(body type, body offset, body size)."""
    if header.version == 3:
        return 1, HEADER_SIZE, SGX_REPORT_SIZE
    if header.version == 4:
        return 2, HEADER_SIZE, TD_REPORT10_SIZE
    r = _Reader(raw, HEADER_SIZE, len(raw), "v5 body descriptor")
    body_type, size = r.u16("body type"), r.u32("body size")
    expected = {2: TD_REPORT10_SIZE, 3: TD_REPORT15_SIZE}.get(body_type)
    if expected is None:
        raise EvidenceError(
            f"v5 quote body type {body_type} is not supported for TDX (expected 2 = TD report "
            "1.0 or 3 = TD report 1.5)"
        )
    if size != expected:
        raise EvidenceError(f"v5 body type {body_type} must be {expected} bytes, says {size}")
    return body_type, HEADER_SIZE + 6, size


@malformed("the TDX/SGX quote")
def parse_quote(raw: bytes) -> Quote:
    """Parse a raw DCAP quote; ``EvidenceError`` names the first malformed field."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise EvidenceError("a quote must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_QUOTE_SIZE:
        raise EvidenceError(f"quote is {len(raw)} bytes; a DCAP quote is at most {MAX_QUOTE_SIZE}")
    if len(raw) < HEADER_SIZE:
        raise EvidenceError(f"quote is {len(raw)} bytes, shorter than the 48-byte header")
    header = _header(raw)
    body_type, body_off, body_size = _body(raw, header)
    body = _Reader(raw, body_off, len(raw), "report body").take(body_size, "the report body")
    signed_size = body_off + body_size
    td = _td_report(body) if header.tee_type == TEE_TYPE_TDX else None
    sgx = parse_sgx_report(body) if header.tee_type == TEE_TYPE_SGX else None

    r = _Reader(raw, signed_size, len(raw), "signature data")
    sig_len = r.u32("signature data length")
    sig_end = r.pos + sig_len
    if sig_end > len(raw):
        raise EvidenceError(
            f"quote truncated: signature data says {sig_len} bytes, {len(raw) - r.pos} present"
        )
    s = _Reader(raw, r.pos, sig_end, "signature data")
    signature = s.take(64, "the quote signature")
    attestation_key = s.take(64, "the attestation key")
    if header.version == 3:
        qe = s
    else:
        outer_type, outer_size = s.u16("certification data type"), s.u32("certification size")
        if outer_type != CERT_TYPE_QE_REPORT:
            raise EvidenceError(
                f"certification data type {outer_type} is not supported (expected 6 = QE "
                "report certification data)"
            )
        qe = _Reader(raw, s.pos, s.pos + outer_size, "QE report certification data")
        if qe.end > sig_end:
            raise EvidenceError("QE report certification data overruns the signature data")
        s.take(outer_size, "QE report certification data")
    qe_report_raw = qe.take(SGX_REPORT_SIZE, "the QE report")
    qe_sig = qe.take(64, "the QE report signature")
    auth = qe.take(qe.u16("QE auth data length"), "QE auth data")
    cert_type, cert_size = qe.u16("PCK certification type"), qe.u32("PCK certification size")
    cert = qe.take(cert_size, "PCK certification data")
    if qe.pos != qe.end or s.pos != s.end:
        raise EvidenceError("signature data has unexplained bytes after the certification data")
    return Quote(
        header=header,
        body_type=body_type,
        td_report=td,
        sgx_report=sgx,
        signature_data=SignatureData(
            signature=signature,
            attestation_key=attestation_key,
            qe_report_raw=qe_report_raw,
            qe_report=parse_sgx_report(qe_report_raw),
            qe_report_signature=qe_sig,
            qe_auth_data=auth,
            certification=CertificationData(cert_type, cert),
        ),
        signed_size=signed_size,
        size=sig_end,
        trailing=raw[sig_end:],
    )


def trailing_note(quote: Quote) -> str | None:
    """What followed the quote, for the verdict; None when nothing did."""
    extra = quote.trailing
    if not extra:
        return None
    if not any(extra):
        return f"{len(extra)} zero bytes of padding follow the quote (ignored)"
    shown = extra[:32].hex() + ("…" if len(extra) > 32 else "")
    return (f"{len(extra)} bytes follow the quote ({shown}); no signature covers them, so "
            "they are ignored, as dcap-qvl and go-tdx-guest do")

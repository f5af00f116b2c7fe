"""A tiny DER encoder for the vendor certificate extensions the development PKI must carry.

Why by hand: ``cryptography`` builds certificates but has no public encoder for arbitrary ASN.1;
a vendor-specific extension goes in as ``UnrecognizedExtension(oid, der_bytes)`` and the bytes
are ours to produce. The Intel SGX, AMD VCEK and NVIDIA TcbInfo extensions use only
SEQUENCE, OID, INTEGER, ENUMERATED, BOOLEAN, OCTET STRING and IA5String/UTF8String, so a
few lines cover them without adding pyasn1/asn1crypto as a dependency.
"""

from __future__ import annotations


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _int_body(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative DER integers are not needed here")
    body = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return b"\x00" + body if body[0] & 0x80 else body


def integer(n: int) -> bytes:
    return tlv(0x02, _int_body(n))


def enumerated(n: int) -> bytes:
    return tlv(0x0A, _int_body(n))


def boolean(value: bool) -> bytes:
    return tlv(0x01, b"\xff" if value else b"\x00")


def octet_string(data: bytes) -> bytes:
    return tlv(0x04, data)


def ia5_string(text: str) -> bytes:
    return tlv(0x16, text.encode("ascii"))


def utf8_string(text: str) -> bytes:
    return tlv(0x0C, text.encode("utf-8"))


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    first = 40 * parts[0] + parts[1]
    out = bytearray()
    for arc in [first, *parts[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def sequence(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))

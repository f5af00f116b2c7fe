"""A real HTTP server on 127.0.0.1 answering like Intel PCCS/PCS and AMD KDS from vector files.

Request and response shapes follow the real endpoints (paths, query parameters, URL-encoded
PEM issuer-chain headers, DER/hex/JSON bodies), so the real client code runs end to end.
Behaviour knobs (``faults``) let tests make a path rate-limit, fail, hang or answer garbage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from teegate.attest.snp import parse_report

DATA = Path(__file__).resolve().parent.parent / "data"
# (report file, VCEK file, product) that the fake KDS knows.
SNP = [
    ("sev-snp/trustee/test-report.bin", "sev-snp/trustee/test-vcek.der", "Milan"),
    ("sev-snp/project-oak/derived-turin-report.bin", "sev-snp/project-oak/derived-turin-vcek.der",
     "Turin"),
    ("sev-snp/project-oak/derived-genoa-report.bin", "sev-snp/project-oak/derived-genoa-vcek.der",
     "Genoa"),
]
CHAINS = {"Milan": "sev-snp/go-sev-guest/ask_ark_milan.pem"}
RIMS = {
    "NV_GPU_DRIVER_GH100_545.00": "collateral/nvidia/Driver_RIM_test_no_gpu.swidtag",
    "NV_GPU_VBIOS_1010_0200_882_96005E0001":
        "collateral/nvidia/1010_0200_882_96005E0001_PROD.swidtag",
}
INTEL = {"B0C06F000000": "collateral/tdx_quote_collateral.json",
         "00A067110000": "collateral/sgx_quote_collateral.json"}

Response = tuple[int, dict[str, str], bytes]


@dataclass
class Fault:
    """Make requests whose path starts with ``prefix`` misbehave ``times`` times."""

    kind: str  # "429", "500", "garbage", "404", "slow", "dup-key", "no-header",
    # "old-header", "body"
    times: int = 1_000_000
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes = b""  # for kind "body": answer 200 with these bytes instead


@dataclass
class VendorState:
    requests: list[str] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)
    # POST /ocsp: DER OCSP request -> DER OCSP response (set by OCSP tests).
    ocsp: Callable[[bytes], bytes] | None = None
    # Intel collateral served instead of the vectors': dcap-qvl collateral JSON (a dict) per
    # upper-case FMSPC, and which of them each PCK CA ("platform", "processor") names.
    intel: dict[str, dict[str, str]] | None = None
    intel_ca: dict[str, str] | None = None
    # RIM XML served by id, besides the vectors' RIMs (development RIMs).
    rims: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.startswith(prefix))


def _vector_collateral() -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    # The TDX vector's PCK chain is under the Platform CA, the SGX vector's under the
    # Processor CA (tests/data/collateral/PROVENANCE.md).
    return ({fmspc: _load(name) for fmspc, name in INTEL.items()},
            {"platform": "B0C06F000000", "processor": "00A067110000"})


def _intel(path: str, query: dict[str, str], table: dict[str, dict[str, str]],
           by_ca: dict[str, str]) -> Response:
    hdr = urllib.parse.quote
    if path.endswith("/pckcrl"):
        fmspc = by_ca.get(query.get("ca") or "")
        if fmspc is None or query.get("encoding") != "der":
            return 404, {}, b""
        col = table[fmspc]
        return 200, {"SGX-PCK-CRL-Issuer-Chain": hdr(col["pck_crl_issuer_chain"]),
                     "Content-Type": "application/pkix-crl"}, bytes.fromhex(col["pck_crl"])
    if path.endswith("/rootcacrl"):
        col = table[by_ca["platform"]]
        return 200, {"Content-Type": "text/plain"}, col["root_ca_crl"].encode()
    if path.endswith("/tcb"):
        fmspc = query.get("fmspc", "")
        if fmspc not in table:
            return 404, {}, b""
        col = table[fmspc]
        tee = "tdx" if "/tdx/" in path else "sgx"
        if (tee == "tdx") != ('"id":"TDX"' in col["tcb_info"]):
            return 404, {}, b""
        body = f'{{"tcbInfo":{col["tcb_info"]},"signature":"{col["tcb_info_signature"]}"}}'
        return 200, {"TCB-Info-Issuer-Chain": hdr(col["tcb_info_issuer_chain"]),
                     "Content-Type": "application/json"}, body.encode()
    if path.endswith("/qe/identity"):
        found = [c for c in table.values()
                 if ('"id":"TDX"' in c["tcb_info"]) == ("/tdx/" in path)]
        if not found:
            return 404, {}, b""
        col = found[0]
        body = (f'{{"enclaveIdentity":{col["qe_identity"]},'
                f'"signature":"{col["qe_identity_signature"]}"}}')
        return 200, {"SGX-Enclave-Identity-Issuer-Chain": hdr(col["qe_identity_issuer_chain"]),
                     "Content-Type": "application/json"}, body.encode()
    return 404, {}, b""


def _load(name: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((DATA / name).read_text())
    return data


def _kds(path: str, query: dict[str, str]) -> Response:
    parts = path.strip("/").split("/")  # vcek v1 Product hwid|cert_chain|crl
    if len(parts) != 4 or parts[0] not in ("vcek", "vlek") or parts[1] != "v1":
        return 404, {}, b""
    product, what = parts[2], parts[3]
    if what == "cert_chain":
        chain = CHAINS.get(product)
        if chain is None or parts[0] != "vcek":
            return 404, {}, b""
        return 200, {"Content-Type": "application/x-pem-file"}, (DATA / chain).read_bytes()
    for report_file, vcek_file, prod in SNP:
        if prod != product:
            continue
        r = parse_report((DATA / report_file).read_bytes(), product=prod)
        t = r.reported_tcb
        want = {"blSPL": str(t.bootloader), "teeSPL": str(t.tee), "snpSPL": str(t.snp),
                "ucodeSPL": str(t.microcode)}
        if prod == "Turin":
            want["fmcSPL"] = str(t.fmc)
        if what == r.chip_id_used.hex() and query == want:
            return 200, {"Content-Type": "application/octet-stream"}, (
                DATA / vcek_file).read_bytes()
    return 404, {}, b"Not Found"


def _rim(path: str, extra: dict[str, bytes]) -> Response:
    rim_id = path.rsplit("/", 1)[-1]
    if rim_id in extra:
        xml = extra[rim_id]
    elif rim_id in RIMS:
        xml = (DATA / RIMS[rim_id]).read_bytes()
    else:
        return 404, {}, b'{"error": "RIM not found"}'

    body = {"id": rim_id, "rim": base64.b64encode(xml).decode(), "rim_format": "SWID",
            "sha256": hashlib.sha256(xml).hexdigest()}
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _garble(status: int, headers: dict[str, str], body: bytes) -> Response:
    return 200, headers, b"<html><body>Service temporarily unavailable</body></html>"


def make_handler(state: VendorState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            with state.lock:
                state.requests.append(self.path)
                fault = None
                for prefix, f in state.faults.items():
                    if url.path.startswith(prefix) and f.times > 0:
                        f.times -= 1
                        fault = f
                        break
            if "/certification/" in url.path:
                table, by_ca = (state.intel, state.intel_ca or {}) if (
                    state.intel is not None) else _vector_collateral()
                status, headers, body = _intel(url.path, query, table, by_ca)
            elif url.path.startswith("/v1/rim/"):
                status, headers, body = _rim(url.path, state.rims)
            else:
                status, headers, body = _kds(url.path, query)
            self._answer(status, headers, body, fault)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            with state.lock:
                state.requests.append("POST " + self.path)
                fault = None
                for prefix, f in state.faults.items():
                    if self.path.startswith(prefix) and f.times > 0:
                        f.times -= 1
                        fault = f
                        break
            if self.path.startswith("/ocsp") and state.ocsp is not None:
                status, headers, body = 200, {"Content-Type": "application/ocsp-response"}, (
                    state.ocsp(data))
            else:
                status, headers, body = 404, {}, b""
            self._answer(status, headers, body, fault)

        def _answer(self, status: int, headers: dict[str, str], body: bytes,
                    fault: Fault | None) -> None:
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.kind in ("429", "500", "404"):
                    status, headers, body = int(fault.kind), {}, b"slow down" if (
                        fault.kind == "429") else b""
                    if fault.retry_after is not None:
                        headers["Retry-After"] = fault.retry_after
                elif fault.kind == "body":
                    status, body = 200, fault.body
                elif fault.kind == "garbage":
                    status, headers, body = _garble(status, headers, body)
                elif fault.kind == "no-header":
                    headers = {k: v for k, v in headers.items() if "Issuer-Chain" not in k}
                elif fault.kind == "old-header":
                    headers = {("SGX-" + k if k == "TCB-Info-Issuer-Chain" else k): v
                               for k, v in headers.items()}
                elif fault.kind == "dup-key":
                    body = body[:-1] + b',"tcbInfo":{"id":"TDX","forged":true}}'
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the tests


@contextmanager
def vendor_server() -> Iterator[tuple[str, VendorState]]:
    """Start the server on a random loopback port; yield (base URL, state)."""
    state = VendorState()
    server = _QuietServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""The checks the peers' published verifiers run, written by us from their formats (no code
copied), so tests can point them at ``teegate node`` as their users would.

Read at: nearai/nearai-cloud-verifier ``py/chat_verifier.py``, ``py/model_verifier.py``
(commit 9629242); nearai/vllm-proxy ``verifiers/signature_verifier.py``,
``verifiers/attestation_verifier.py`` (commit 8267d17), identical in
Phala-Network/private-ml-sdk ``vllm-proxy/verifiers/`` (commit fa11d12) but for the base URL.

What they do, in words:

- Streams are read with ``requests``' ``iter_lines()`` and rebuilt as ``line + "\\n"`` for
  every line, blank lines included, so the hashed text is the whole SSE stream, ``data:
  [DONE]`` included (for ``\\n`` line ends). Plain answers hash ``response.text``; the
  request hash is over the exact JSON text they sent.
- ``GET /v1/signature/{id}``: NEAR takes a 2-field text as ``req:resp`` and a 3-field one
  as ``model:req:resp`` (its gateway's ``provider_tee`` kind); private-ml-sdk unpacks exactly
  two fields (``ValueError`` otherwise). The ecdsa signer is recovered by EIP-191
  ``personal_sign`` and compared case-insensitively with ``signing_address``.
- Report lookup for a signer: NEAR picks the ``model_attestations`` entry with that
  ``signing_address``, else the report itself; private-ml-sdk does the same with
  ``all_attestations``. private-ml-sdk's attestation walkthrough takes
  ``all_attestations[0]`` when the list is non-empty.
- ``check_report_data``: ``report_data[:32]`` = the signing address bytes right-padded with
  zeros, ``report_data[32:]`` = the nonce they sent, from the verified quote's body.
- ``check_gpu``: ``json.loads(nvidia_payload)["nonce"]`` = the nonce (then NRAS, not here).
- Compose: NEAR reads ``info.tcb_info`` with ``.get`` (a dict or a JSON string);
  private-ml-sdk indexes ``attestation["info"]["tcb_info"]`` (a ``KeyError`` when absent).
  With an ``app_compose``, both load it as JSON and read ``docker_compose_file``, and compare
  ``mr_config_id`` with ``01 ‖ sha256(app_compose)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

import dcap_qvl
import requests
from eth_account import Account
from eth_account.messages import encode_defunct


def sha256_text(text: str) -> str:
    return sha256(text.encode()).hexdigest()


def stream_as_they_read_it(response: requests.Response) -> tuple[str, str | None]:
    """The text NEAR's and private-ml-sdk's stream examples hash, and the chat id they take
    (the first ``data: {`` line's ``id``)."""
    text = ""
    chat_id = None
    for chunk in response.iter_lines():
        line = chunk.decode()
        text += line + "\n"
        if line.startswith("data: {") and chat_id is None:
            chat_id = json.loads(line[6:])["id"]
    return text, chat_id


def near_hashes(text: str) -> tuple[str, str]:
    """(request hash, response hash) as NEAR's chat verifier reads a signed text."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"expected 2 or 3 colon-separated parts, got {len(parts)}")
    return (parts[1], parts[2]) if len(parts) == 3 else (parts[0], parts[1])


def pml_hashes(text: str) -> tuple[str, str]:
    """private-ml-sdk's reading: exactly two fields."""
    request_hash, response_hash = text.split(":")
    return request_hash, response_hash


def recovered_signer(text: str, signature: str) -> str:
    address: str = Account.recover_message(encode_defunct(text=text), signature=signature)
    return address


@dataclass
class SignatureVerdict:
    request_hash_matches: bool
    response_hash_matches: bool
    signature_valid: bool

    @property
    def ok(self) -> bool:
        return self.request_hash_matches and self.response_hash_matches and self.signature_valid


def check_chat(signature_payload: dict[str, Any], request_body: str, response_text: str,
               *, reading: str) -> SignatureVerdict:
    """``verify_chat``'s signature half; ``reading`` is ``near`` or ``pml``."""
    text = signature_payload["text"]
    req, resp = near_hashes(text) if reading == "near" else pml_hashes(text)
    signer = recovered_signer(text, signature_payload["signature"])
    return SignatureVerdict(
        request_hash_matches=sha256_text(request_body) == req,
        response_hash_matches=sha256_text(response_text) == resp,
        signature_valid=signer.lower() == signature_payload["signing_address"].lower(),
    )


def near_attestation_for(report: dict[str, Any], signing_address: str) -> dict[str, Any]:
    if "model_attestations" in report:
        found: dict[str, Any] = next(
            item for item in report["model_attestations"]
            if item["signing_address"].lower() == signing_address.lower())
        return found
    return report


def pml_attestation_for(report: dict[str, Any], signing_address: str) -> dict[str, Any]:
    if "all_attestations" in report:
        found: dict[str, Any] = next(
            item for item in report["all_attestations"]
            if item["signing_address"].lower() == signing_address.lower())
        return found
    return report


def pml_first_attestation(report: dict[str, Any]) -> dict[str, Any]:
    first: dict[str, Any] = (report.get("all_attestations", [report])[0]
                             if report.get("all_attestations") else report)
    return first


def quote_body(attestation: dict[str, Any], collateral: str, root_der: bytes,
               now: int) -> dict[str, str]:
    """The verified quote's ``reportdata`` and ``mrconfig``, as NEAR's ``check_tdx_quote``
    builds them from dcap-qvl's result (here under the development root, with the
    collateral the development node serves, instead of Intel's PCS)."""
    quote = bytes.fromhex(attestation["intel_quote"])
    coll = dcap_qvl.QuoteCollateralV3.from_json(collateral)
    result = json.loads(dcap_qvl.verify_with_root_ca(quote, coll, root_der, now).to_json())
    td10 = result["report"]["TD10"]
    return {"reportdata": td10.get("report_data", ""), "mrconfig": td10.get("mr_config_id", "")}


def check_report_data(attestation: dict[str, Any], request_nonce: str,
                      body: dict[str, str]) -> dict[str, bool]:
    report_data = bytes.fromhex(body["reportdata"].removeprefix("0x"))
    algo = attestation.get("signing_algo", "ecdsa").lower()
    address = attestation["signing_address"]
    raw = bytes.fromhex(address.removeprefix("0x") if algo == "ecdsa" else address)
    return {"binds_address": report_data[:32] == raw.ljust(32, b"\x00"),
            "embeds_nonce": report_data[32:64].hex() == request_nonce}


def gpu_nonce_matches(attestation: dict[str, Any], request_nonce: str) -> bool:
    payload = json.loads(attestation["nvidia_payload"])
    return bool(payload["nonce"].lower() == request_nonce.lower())


def near_tcb_info(attestation: dict[str, Any]) -> dict[str, Any] | None:
    raw = attestation.get("info") or {}
    tcb = raw.get("tcb_info") if isinstance(raw, dict) else None
    if isinstance(tcb, str):
        tcb = json.loads(tcb)
    return tcb if isinstance(tcb, dict) else None


def pml_compose(attestation: dict[str, Any], mrconfig: str) -> bool | None:
    """private-ml-sdk's ``show_compose``: None when there is no compose to show, else
    whether ``mr_config_id`` starts with ``01 ‖ sha256(app_compose)``."""
    tcb = attestation["info"]["tcb_info"]
    if isinstance(tcb, str):
        tcb = json.loads(tcb)
    app_compose = tcb.get("app_compose")
    if not app_compose:
        return None
    _ = json.loads(app_compose)["docker_compose_file"]  # what it prints (KeyError if absent)
    compose_hash = sha256(app_compose.encode()).hexdigest()
    return bool(mrconfig.lower().removeprefix("0x").startswith("01" + compose_hash))

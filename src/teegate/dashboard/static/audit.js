// In-browser audit of a teegate receipt bundle with WebCrypto (Ed25519, SHA-256): the same
// checks as `teegate audit` that need no TEE verifier. Nothing the gateway sent is trusted
// except through the log key in the "trusted log key" field.
"use strict";
(function () {
  const enc = new TextEncoder();
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- bytes
  function hex(b) { return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(""); }
  function unhex(s, what) {
    if (typeof s !== "string" || !/^([0-9a-f]{2})+$/.test(s)) throw new Error(what + " is not lower-case hex");
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }
  function b64e(b) { let s = ""; b.forEach((x) => { s += String.fromCharCode(x); }); return btoa(s); }
  function b64d(s, what) {
    let raw;
    try { raw = atob(s); } catch (e) { throw new Error(what + ": not valid base64"); }
    const out = Uint8Array.from(raw, (c) => c.charCodeAt(0));
    if (b64e(out) !== s) throw new Error(what + ": non-canonical base64");
    return out;
  }
  function concat() {
    const parts = Array.from(arguments);
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    parts.forEach((p) => { out.set(p, o); o += p.length; });
    return out;
  }
  function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
  async function sha256(b) { return new Uint8Array(await crypto.subtle.digest("SHA-256", b)); }
  const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));
  const leafHash = (d) => sha256(concat(Uint8Array.of(0), d));

  // RFC 8785 (JCS): sorted keys (UTF-16 code units), ECMAScript number and string forms.
  function jcs(v) {
    if (v === null) return "null";
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new Error("JCS: not a finite number");
      if (Number.isInteger(v) && !Number.isSafeInteger(v)) throw new Error("JCS: integer beyond 2^53");
      return Object.is(v, -0) ? "0" : String(v);
    }
    if (typeof v === "string") return JSON.stringify(v);
    if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
    if (typeof v === "object") {
      return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
    }
    throw new Error("JCS: unsupported value");
  }

  async function ed25519(pub, sig, msg) {
    const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, sig, msg);
  }

  // ---------------------------------------------------------------- C2SP notes and keys
  async function parseVkey(text) {
    const t = text.trim();
    const a = t.indexOf("+"), b = t.indexOf("+", a + 1);
    if (a < 1 || b < 0) throw new Error("expected name+hash+key");
    const name = t.slice(0, a), hid = t.slice(a + 1, b);
    if (!/^[0-9a-f]{8}$/.test(hid)) throw new Error("key hash must be 8 lower-case hex digits");
    const raw = b64d(t.slice(b + 1), "verifier key");
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("not an Ed25519 (0x01) key of 32 bytes");
    const pub = raw.slice(1);
    const id = (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(1), pub))).slice(0, 4);
    if (hex(id) !== hid) throw new Error("key hash " + hid + " does not match the key");
    return { name: name, id: id, pub: pub };
  }
  function parseNote(note) {
    if (typeof note !== "string" || !note.endsWith("\n")) throw new Error("malformed note: must end with a newline");
    const split = note.lastIndexOf("\n\n");
    if (split < 0) throw new Error("malformed note: no blank line before the signatures");
    const text = note.slice(0, split + 1);
    const sigs = note.slice(split + 2, -1).split("\n").map((line) => {
      if (!line.startsWith("\u2014 ")) throw new Error("malformed note: signature line must start with '— '");
      const rest = line.slice(2), sp = rest.indexOf(" ");
      if (sp < 1) throw new Error("malformed note: signature line must be '— name base64'");
      const raw = b64d(rest.slice(sp + 1), "signature");
      if (raw.length < 5) throw new Error("malformed note: signature too short");
      return { name: rest.slice(0, sp), id: raw.slice(0, 4), sig: raw.slice(4) };
    });
    return { text: text, sigs: sigs };
  }
  function parseCheckpoint(text) {
    const lines = text.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("malformed checkpoint body");
    const root = b64d(lines[2], "checkpoint root");
    if (root.length !== 32) throw new Error("checkpoint root must be 32 bytes");
    return { origin: lines[0], size: Number(lines[1]), root: root };
  }
  async function verifyCheckpoint(note, key) {
    const n = parseNote(note);
    const cp = parseCheckpoint(n.text);
    if (cp.origin !== key.name) throw new Error("origin " + JSON.stringify(cp.origin) + " is not the trusted key's name " + JSON.stringify(key.name));
    let ok = false;
    for (const s of n.sigs) {
      if (s.name !== key.name || !equal(s.id, key.id)) continue;  // unknown keys are ignored
      if (!(await ed25519(key.pub, s.sig, enc.encode(n.text)))) throw new Error("the signature by " + key.name + " does not verify");
      ok = true;
    }
    if (!ok) throw new Error("no signature by the trusted log key " + key.name + "+" + hex(key.id));
    return cp;
  }

  // ---------------------------------------------------------------- RFC 6962 / 9162 proofs
  const lsb = (x) => x % 2 === 1;
  const half = (x) => Math.floor(x / 2);
  async function rootFromInclusion(index, size, leaf, path) {
    if (index >= size) throw new Error("index " + index + " is outside a tree of size " + size);
    let fn = index, sn = size - 1, r = leaf;
    for (const p of path) {
      if (sn === 0) throw new Error("the proof is longer than the tree is deep");
      if (lsb(fn) || fn === sn) {
        r = await nodeHash(p, r);
        if (!lsb(fn)) { do { fn = half(fn); sn = half(sn); } while (!lsb(fn) && fn !== 0); }
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn); sn = half(sn);
    }
    if (sn !== 0) throw new Error("the proof is shorter than the tree is deep");
    return r;
  }
  async function verifyConsistency(size1, size2, path, root1, root2) {
    if (size1 === size2) {
      if (path.length || !equal(root1, root2)) throw new Error("same size, different roots (a fork)");
      return;
    }
    if (size1 === 0 || size2 < size1) throw new Error("sizes " + size1 + " → " + size2 + " cannot be consistent");
    let c = path.slice();
    if (Number.isInteger(Math.log2(size1))) c.unshift(root1);  // an exact power of 2
    if (!c.length) throw new Error("empty proof");
    let fn = size1 - 1, sn = size2 - 1;
    while (lsb(fn)) { fn = half(fn); sn = half(sn); }
    let fr = c[0], sr = c[0];
    for (const h of c.slice(1)) {
      if (sn === 0) throw new Error("the proof is too long");
      if (lsb(fn) || fn === sn) {
        fr = await nodeHash(h, fr); sr = await nodeHash(h, sr);
        if (!lsb(fn)) { do { fn = half(fn); sn = half(sn); } while (!lsb(fn) && fn !== 0); }
      } else {
        sr = await nodeHash(sr, h);
      }
      fn = half(fn); sn = half(sn);
    }
    if (sn !== 0 || !equal(fr, root1) || !equal(sr, root2)) throw new Error("the proof does not reproduce both roots");
  }

  // ---------------------------------------------------------------- the audit
  function parseProof(b) {
    if (typeof b.tlog_proof === "string") {
      const cut = b.tlog_proof.indexOf("\n\n");
      if (cut < 0) throw new Error("tlog-proof: no blank line before the checkpoint");
      const lines = b.tlog_proof.slice(0, cut).split("\n");
      if (lines[0] !== "c2sp.org/tlog-proof@v1") throw new Error("tlog-proof: bad first line");
      let pos = 1;
      if (lines[pos] && lines[pos].startsWith("extra ")) pos++;
      const m = /^index (0|[1-9][0-9]*)$/.exec(lines[pos] || "");
      if (!m) throw new Error("tlog-proof: missing index line");
      const hashes = lines.slice(pos + 1).map((l) => b64d(l, "proof hash"));
      return { index: Number(m[1]), hashes: hashes, note: b.tlog_proof.slice(cut + 2) };
    }
    if (Array.isArray(b.inclusion_proof) && typeof b.checkpoint === "string") {
      return { index: b.leaf_index, hashes: b.inclusion_proof.map((h) => b64d(h, "proof hash")), note: b.checkpoint };
    }
    throw new Error("the bundle carries no inclusion proof");
  }

  async function audit(bundle, vkeyText, extraKeyHex) {
    const steps = [];
    const add = (name, result, why) => steps.push({ name: name, result: result, why: why });
    const doc = bundle && bundle.receipt;
    let key = null;
    try {
      key = await parseVkey(vkeyText);
      add("log.key", "ok", key.name + "+" + hex(key.id));
    } catch (e) { add("log.key", "fail", "trusted log key: " + e.message); return steps; }
    if (!doc || doc.api_version !== "aci/1" || doc.v !== "teegate-receipt/1" || !Array.isArray(doc.event_log)) {
      add("receipt.format", "fail", "not an aci/1 + teegate-receipt/1 document"); return steps;
    }
    if (!/^[0-9a-f]{128}$/.test(doc.signature || "") || !/^ed25519:[0-9a-f]{16}$/.test(doc.key_id || "")) {
      add("receipt.format", "fail", "signature or key_id malformed"); return steps;
    }
    add("receipt.format", "ok", "aci/1 + teegate-receipt/1, id " + doc.receipt_id);
    const ev = {};
    doc.event_log.forEach((e) => { if (e && typeof e === "object" && !(e.type in ev)) ev[e.type] = e; });
    // receipt.signature: Ed25519 over JCS of the document without `signature`
    try {
      const trusted = [key.pub];
      if (extraKeyHex && extraKeyHex.trim()) trusted.push(unhex(extraKeyHex.trim(), "receipt key"));
      const body = Object.assign({}, doc); delete body.signature;
      const msg = enc.encode(jcs(body));
      let named = 0, ok = false;
      for (const pub of trusted) {
        if ("ed25519:" + hex(await sha256(pub)).slice(0, 16) !== doc.key_id) continue;
        named++;
        if (await ed25519(pub, unhex(doc.signature, "signature"), msg)) { ok = true; break; }
      }
      if (!named) add("receipt.signature", "fail", "key_id " + doc.key_id + " is not one of the trusted receipt keys");
      else if (!ok) add("receipt.signature", "fail", "Ed25519 signature does not verify over the receipt's JCS form");
      else add("receipt.signature", "ok", "Ed25519 by " + doc.key_id + " over " + msg.length + " bytes of JCS");
    } catch (e) { add("receipt.signature", "fail", e.message); }
    // receipt.trust_claim
    const call = ev["teegate.call"] || {};
    const level = call.trust_level;
    if (level === "attested" || level === "attested+gpu") {
      const problems = [];
      if ((ev["upstream.verified"] || {}).result !== "verified") problems.push("upstream.verified is not 'verified'");
      const att = ev["teegate.attestation"];
      if (!att) problems.push("no teegate.attestation event (no verdict cited)");
      else if (level === "attested+gpu" && att.gpu !== true) problems.push("the cited attestation has no GPU evidence");
      const ps = ev["teegate.provider_signature"];
      if (!ps || ps.verified !== true) problems.push("no verified provider signature");
      add("receipt.trust_claim", problems.length ? "fail" : "ok",
          problems.length ? "claims " + level + " but " + problems.join("; ") : level + ": verdict and provider signature cited");
    } else {
      add("receipt.trust_claim", "n/a", "trust level served: " + (level || "none"));
    }
    // provider.signature: the signed text must be the recorded hashes; the signature itself
    // (EIP-191 secp256k1 or Ed25519 of the provider) is re-verified by `teegate audit`.
    const ps = ev["teegate.provider_signature"];
    if (!ps || ps.verified !== true) {
      add("provider.signature", "n/a", "the receipt claims no verified provider signature");
    } else {
      const strip = (e) => (e && typeof e.body_hash === "string" ? e.body_hash.replace(/^sha256:/, "") : undefined);
      const want = strip(ev["request.forwarded"]) + ":" + (strip(ev["response.received"]) || strip(ev["response.returned"]));
      const text = String(ps.text || "");
      if (text !== want && !(text.startsWith(want + ":") && /^[0-9a-f]{64}$/.test(text.slice(want.length + 1)))) {
        add("provider.signature", "fail", "signed text is not request.forwarded:response hashes " + want);
      } else {
        add("provider.signature", "skip", ps.algo + " signature by " + ps.signing_key + " covers the recorded hashes; WebCrypto cannot check " + ps.algo + " here, `teegate audit` re-verifies it");
      }
    }
    // checkpoint.signature and receipt.inclusion
    let proof = null, cp = null;
    try { proof = parseProof(bundle); } catch (e) { add("checkpoint.signature", "fail", e.message); }
    if (proof) {
      try {
        cp = await verifyCheckpoint(proof.note, key);
        add("checkpoint.signature", "ok", "signed note by " + key.name + ", tree size " + cp.size);
      } catch (e) { add("checkpoint.signature", "fail", e.message); }
    }
    if (proof && cp) {
      try {
        const leaf = await leafHash(enc.encode(jcs(doc)));
        const root = await rootFromInclusion(proof.index, cp.size, leaf, proof.hashes);
        if (!equal(root, cp.root)) throw new Error("computed root " + b64e(root) + " is not the checkpoint's " + b64e(cp.root));
        add("receipt.inclusion", "ok", "leaf " + proof.index + " of " + cp.size + ", " + proof.hashes.length + (proof.hashes.length === 1 ? " hash" : " hashes") + " to the signed root");
      } catch (e) { add("receipt.inclusion", "fail", e.message); }
    } else if (proof) {
      add("receipt.inclusion", "skip", "no verified checkpoint to prove against");
    }
    const att = ev["teegate.attestation"];
    add("attestation.evidence", att ? "skip" : "n/a", att
      ? "re-verifying the TEE evidence needs `teegate audit --policy` (verdict " + String(att.verdict_digest).slice(0, 16) + "…)"
      : "no attestation is cited");
    return steps;
  }

  function badge(text, tone) { const s = document.createElement("span"); s.className = "badge " + tone; s.textContent = text; return s; }
  const TONE = { ok: "ok", fail: "bad", skip: "warn", "n/a": "muted" };
  function show(steps, listEl, resultEl) {
    listEl.textContent = "";
    steps.forEach((s) => {
      const li = document.createElement("li");
      li.dataset.check = s.name; li.dataset.result = s.result;
      const n = document.createElement("span"); n.className = "name"; n.textContent = s.name;
      const w = document.createElement("span"); w.className = "why"; w.textContent = s.why;
      li.append(n, badge(s.result, TONE[s.result] || "muted"), w);
      listEl.append(li);
    });
    const failed = steps.filter((s) => s.result === "fail").map((s) => s.name);
    const skipped = steps.filter((s) => s.result === "skip").map((s) => s.name);
    resultEl.textContent = "";
    resultEl.dataset.result = failed.length ? "fail" : "pass";
    resultEl.append(failed.length ? badge("FAILED: " + failed.join(", "), "bad")
      : badge("PASSED in this browser", "ok"));
    if (!failed.length && skipped.length) {
      const note = document.createElement("span"); note.className = "why";
      note.textContent = "  left to teegate audit: " + skipped.join(", ");
      resultEl.append(note);
    }
  }

  async function run() {
    const listEl = $("audit-steps"), resultEl = $("audit-result");
    resultEl.textContent = ""; resultEl.append(badge("running…", "info"));
    let bundle;
    try {
      const embedded = $("bundle");
      const text = embedded ? embedded.textContent : $("bundle-text").value;
      bundle = JSON.parse(text);
    } catch (e) {
      show([{ name: "bundle.parse", result: "fail", why: "not JSON: " + e.message }], listEl, resultEl);
      return;
    }
    let steps;
    try { steps = await audit(bundle, $("vkey").value, $("receipt-key").value); }
    catch (e) { steps = [{ name: "audit", result: "fail", why: String(e && e.message || e) }]; }
    show(steps, listEl, resultEl);
  }

  // ---------------------------------------------------------------- browser monitor (log page)
  async function monitor() {
    const info = JSON.parse($("log-info").textContent);
    const listEl = $("monitor-steps"), resultEl = $("monitor-result");
    const steps = [];
    const add = (name, result, why) => steps.push({ name: name, result: result, why: why });
    try {
      const key = await parseVkey(info.vkey);
      const note = await (await fetch("/v1/log/checkpoint", { credentials: "omit" })).text();
      const cp = await verifyCheckpoint(note, key);
      add("checkpoint.signature", "ok", "latest checkpoint, size " + cp.size);
      const slot = "teegate.monitor." + key.name + "+" + hex(key.id);
      const seen = JSON.parse(localStorage.getItem(slot) || "null");
      if (!seen) {
        add("checkpoint.consistency", "n/a", "first visit: remembering size " + cp.size + " (trust on first use)");
      } else if (seen.size > cp.size) {
        add("checkpoint.consistency", "fail", "the log shrank from " + seen.size + " to " + cp.size);
      } else {
        const old = b64d(seen.root, "remembered root");
        let path = [];
        if (seen.size !== cp.size && seen.size > 0) {
          const r = await fetch("/v1/log/proof/consistency?from=" + seen.size + "&to=" + cp.size, { credentials: "omit" });
          path = (await r.json()).hashes.map((h) => b64d(h, "proof hash"));
        }
        if (seen.size > 0) await verifyConsistency(seen.size, cp.size, path, old, cp.root);
        add("checkpoint.consistency", "ok", "size " + seen.size + " → " + cp.size + " is one history (" + path.length + " hashes)");
      }
      localStorage.setItem(slot, JSON.stringify({ size: cp.size, root: b64e(cp.root) }));
    } catch (e) { add("monitor", "fail", String(e && e.message || e)); }
    show(steps, listEl, resultEl);
  }

  window.teegateAudit = { audit: audit, jcs: jcs, verifyConsistency: verifyConsistency };
  document.addEventListener("DOMContentLoaded", () => {
    if ($("run-audit")) {
      $("run-audit").addEventListener("click", run);
      if ($("bundle")) run();
    }
    if ($("log-info")) monitor();
  });
})();

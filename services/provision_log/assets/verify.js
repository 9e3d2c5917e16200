// Checks a record's inclusion proof in the browser (RFC 9162 §2.1.3.2),
// the checkpoint's Ed25519 signature (C2SP signed note) and the resident tag,
// with Web Crypto only. Same rules as services/provision_log/verify.py.
"use strict";
(() => {
  const enc = new TextEncoder();
  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const toB64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  };
  const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
  const leafHash = (entry) => sha256(concat(new Uint8Array([0]), entry));
  const nodeHash = (l, r) => sha256(concat(new Uint8Array([1]), l, r));

  async function verifyInclusion(leaf, index, size, proof, root) {
    if (index >= size) return false;
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) return false;
      if ((fn & 1) || fn === sn) {
        r = await nodeHash(p, r);
        while (!(fn & 1) && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      } else {
        r = await nodeHash(r, p);
      }
      fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
    }
    return sn === 0 && equal(r, root);
  }

  async function verifyCheckpoint(note, rawKey, origin) {
    const cut = note.indexOf("\n\n");
    if (cut < 0) throw new Error("署名がありません");
    const body = note.slice(0, cut + 1);
    const lines = body.split("\n");
    if (lines[0] !== origin) throw new Error("別のログのチェックポイントです");
    const size = Number(lines[1]);
    const root = b64(lines[2]);
    const keyId = (await sha256(concat(enc.encode("provision-log\n"), new Uint8Array([1]), rawKey))).slice(0, 4);
    const key = await crypto.subtle.importKey("raw", rawKey, { name: "Ed25519" }, false, ["verify"]);
    for (const line of note.slice(cut + 2).split("\n")) {
      const parts = line.split(" ");
      if (parts.length !== 3 || parts[0] !== "\u2014" || parts[1] !== "provision-log") continue;
      const blob = b64(parts[2]);
      if (!equal(blob.slice(0, 4), keyId)) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, blob.slice(4), enc.encode(body))) return { size, root };
    }
    throw new Error("チェックポイントの署名が正しくありません");
  }

  async function verifyBundle(bundle, rawKey, origin, residentCode) {
    const checkpoint = await verifyCheckpoint(bundle.checkpoint, rawKey, origin);
    if (checkpoint.size !== bundle.tree_size) throw new Error("記録数が一致しません");
    const entry = enc.encode(bundle.entry);
    const ok = await verifyInclusion(await leafHash(entry), bundle.leaf_index, checkpoint.size, bundle.inclusion_path.map(b64), checkpoint.root);
    if (!ok) throw new Error("記録がログに含まれていません（改ざんの可能性）");
    const parsed = JSON.parse(bundle.entry);
    if (parsed.record_id !== bundle.record_id) throw new Error("別の記録です");
    const tag = toB64(await sha256(concat(b64(bundle.resident_tag_salt), enc.encode(residentCode))));
    if (tag !== parsed.resident_tag) throw new Error("あなたの記録ではありません");
    if (bundle.reason !== undefined && toB64(await sha256(enc.encode(bundle.reason))) !== parsed.reason_sha256) throw new Error("理由が記録と一致しません");
    return checkpoint.size;
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest(".verify-button");
    if (!button) return;
    const output = button.parentElement.querySelector(".verify-result");
    output.className = "verify-result";
    output.textContent = "検証中…";
    try {
      const response = await fetch(button.dataset.proofUrl, { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.status === 409 ? "まだ署名されていません。数秒後にお試しください" : "証明を取得できませんでした");
      const data = document.body.dataset;
      const size = await verifyBundle(await response.json(), b64(data.logKey), data.logOrigin, data.residentCode);
      output.classList.add("ok");
      output.textContent = `✓ 検証成功：記録数 ${size} のログに含まれています（署名確認済み）`;
    } catch (error) {
      output.classList.add("failed");
      output.textContent = `✗ 検証失敗：${error.message}`;
    }
  });
})();

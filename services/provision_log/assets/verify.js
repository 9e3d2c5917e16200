// Checks, in the browser and with Web Crypto only, that what the page displays of a record is what
// the log proves: the record is rebuilt from the displayed fields, serialised canonically (the same
// bytes as services/provision_log/domain.py canonical_record), hashed with the entry's salt and
// compared with the leaf's record_sha256; the leaf is checked against its inclusion proof (RFC 9162
// §2.1.3.2) to the checkpoint, whose Ed25519 signature (C2SP signed note) is checked with the log's
// key; the leaf's tag must be the resident's. The incidents displayed with the record are checked the
// same way against their own leaves. Same rules as services/provision_log/verify.py.
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

  const ITEM_LABELS = {
    resident_code: "住民票コード", individual_number: "個人番号", name: "氏名", name_kana: "氏名の振り仮名", former_surname: "旧氏",
    alias: "通称", birth_date: "生年月日", sex: "性別", address: "住所", status: "登録の状態", change: "異動事由・異動年月日",
  };
  const QUERY_LABELS = { ByResidentCode: "住民票コードによる照会", ByIndividualNumber: "個人番号による照会", ByBasicItems: "基本4情報による検索" };

  // Canonical JSON: sorted keys, no spaces, null/absent fields left out (Python: json.dumps(sort_keys=True,
  // separators=(",", ":"), ensure_ascii=False) of model_dump(mode="json", exclude_none=True)).
  const canonical = (value) => {
    if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
    if (value !== null && typeof value === "object") {
      const keys = Object.keys(value).filter((k) => value[k] !== null && value[k] !== undefined).sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
    }
    return JSON.stringify(value);
  };

  const jst = (iso) => {
    const d = new Date(Date.parse(iso) + 9 * 3600 * 1000);
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getUTCFullYear()}年${two(d.getUTCMonth() + 1)}月${two(d.getUTCDate())}日 ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
  };

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

  async function proves(entryText, index, path, checkpoint) {
    return verifyInclusion(await leafHash(enc.encode(entryText)), index, checkpoint.size, path.map(b64), checkpoint.root);
  }

  // shown: the record as displayed ({record_id, provided_at, recipient, recipient_name, affair, affair_name, items,
  // reason (null when none), provider, query_type}); shownIncidents: [{incident_id, kind, reporter, reported_at, explanation}].
  async function verifyDisplayed(bundle, shown, shownIncidents, rawKey, origin, residentCode) {
    const checkpoint = await verifyCheckpoint(bundle.checkpoint, rawKey, origin);
    if (checkpoint.size !== bundle.tree_size) throw new Error("記録数が一致しません");
    if (!(await proves(bundle.entry, bundle.leaf_index, bundle.inclusion_path, checkpoint))) throw new Error("記録がログに含まれていません（改ざんの可能性）");
    const leaf = JSON.parse(bundle.entry);
    if (leaf.record_id !== shown.record_id || bundle.record_id !== shown.record_id) throw new Error("別の記録です");
    const salt = b64(bundle.resident_tag_salt);
    if (toB64(await sha256(concat(salt, enc.encode(residentCode)))) !== leaf.resident_tag) throw new Error("あなたの記録ではありません");
    for (const field of ["provided_at", "provider", "recipient", "affair", "query_type"]) {
      if (leaf[field] !== shown[field] && !(field === "provided_at" && Date.parse(leaf[field]) === Date.parse(shown[field]))) throw new Error(`表示された内容（${field}）がログの記録と一致しません`);
    }
    if (canonical(leaf.items) !== canonical(shown.items)) throw new Error("表示された情報の種類がログの記録と一致しません");
    const reasonHash = shown.reason === null ? undefined : toB64(await sha256(enc.encode(shown.reason)));
    if (reasonHash !== leaf.reason_sha256) throw new Error("表示された理由がログの記録と一致しません");
    if (leaf.kind === "provision/v2") {
      if (!bundle.record) throw new Error("記録がありません");
      const record = { ...bundle.record, ...shown, resident_code: residentCode };
      const digest = toB64(await sha256(concat(salt, enc.encode(canonical(record)))));
      if (digest !== leaf.record_sha256) throw new Error("表示された記録がログの記録と一致しません（改ざんの可能性）");
    } else if (leaf.kind !== "provision/v1") {
      throw new Error("提供の記録ではありません");
    }
    const proved = new Map();
    for (const inc of bundle.incidents || []) {
      if (!(await proves(inc.entry, inc.leaf_index, inc.inclusion_path, checkpoint))) throw new Error("事故の記録がログに含まれていません");
      const entry = JSON.parse(inc.entry);
      if (entry.incident_id !== inc.incident_id || !entry.record_ids.includes(shown.record_id)) throw new Error("別の事故の記録です");
      proved.set(entry.incident_id, entry);
    }
    for (const id of proved.keys()) {
      if (!shownIncidents.some((s) => s.incident_id === id)) throw new Error("ログにある事故の記録が表示されていません");
    }
    for (const s of shownIncidents) {
      const entry = proved.get(s.incident_id);
      if (!entry) throw new Error("表示された事故の記録がログにありません");
      if (entry.incident_kind !== s.kind || entry.reporter !== s.reporter || Date.parse(entry.reported_at) !== Date.parse(s.reported_at)) throw new Error("表示された事故の記録がログと一致しません");
      if (s.explanation === null || toB64(await sha256(enc.encode(s.explanation))) !== entry.explanation_sha256) throw new Error("表示された事故の説明がログと一致しません");
    }
    return { size: checkpoint.size, format: leaf.kind, incidents: proved.size };
  }

  // What the page displays of one record (li.record), with the displayed labels checked against the values.
  function displayed(li) {
    const dd = (cls) => li.querySelector(`dd.${cls}`);
    const time = li.querySelector("time.provided-at");
    const provided_at = time.getAttribute("datetime");
    if (jst(provided_at) !== time.textContent) throw new Error("表示された日時がログの記録と一致しません");
    const items = dd("items").dataset.items.split(" ").filter(Boolean);
    if (items.map((i) => ITEM_LABELS[i] || i).join("、") !== dd("items").textContent) throw new Error("表示された情報の種類が記録と一致しません");
    const provider = dd("provider");
    if (!provider.textContent.endsWith(`（${QUERY_LABELS[provider.dataset.queryType] || provider.dataset.queryType}）`)) throw new Error("表示された照会の方法が記録と一致しません");
    const reason = dd("reason");
    const shown = {
      record_id: li.dataset.recordId, provided_at, items,
      recipient: dd("recipient").dataset.recipient, recipient_name: dd("recipient").textContent,
      affair: dd("affair").dataset.affair, affair_name: dd("affair").textContent,
      reason: reason.dataset.absent ? null : reason.textContent,
      provider: provider.dataset.provider, query_type: provider.dataset.queryType,
    };
    const incidents = [...li.querySelectorAll(".incident")].map((div) => {
      const explanation = div.querySelector(".explanation");
      const reported = div.querySelector("time.reported-at");
      if (reported && jst(reported.getAttribute("datetime")) !== reported.textContent) throw new Error("表示された事故の日時が一致しません");
      return {
        incident_id: div.dataset.incidentId, kind: div.dataset.kind, reporter: div.querySelector(".reporter")?.dataset.reporter,
        reported_at: reported?.getAttribute("datetime"), explanation: explanation ? explanation.textContent : null,
      };
    });
    return { shown, incidents };
  }

  if (typeof module !== "undefined") module.exports = { canonical, jst, verifyDisplayed };
  if (typeof document === "undefined") return;

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
      const { shown, incidents } = displayed(button.closest("li.record"));
      const result = await verifyDisplayed(await response.json(), shown, incidents, b64(data.logKey), data.logOrigin, data.residentCode);
      output.classList.add("ok");
      const extra = result.incidents ? `、事故の記録 ${result.incidents} 件も一致` : "";
      output.textContent = `✓ 検証成功：表示された内容はログの記録と一致し、記録数 ${result.size} のログに含まれています（署名確認済み${extra}）`;
    } catch (error) {
      output.classList.add("failed");
      output.textContent = `✗ 検証失敗：${error.message}`;
    }
  });
})();

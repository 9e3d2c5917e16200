"""Form posts of the staff screens: urlencoded bodies into contracts, errors into Japanese.

The register has no multipart parser (python-multipart is not a dependency):
every form is ``application/x-www-form-urlencoded`` and parsed here.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request
from pydantic import ValidationError

MAX_FORM_BYTES = 64 * 1024

FIELD_LABELS = {
    "name.family_name": "氏", "name.given_name": "名", "name.family_name_kana": "氏（フリガナ）", "name.given_name_kana": "名（フリガナ）",
    "name": "氏名", "birth_date": "生年月日", "sex": "性別", "address": "住所", "address.text": "住所", "address.postal_code": "郵便番号",
    "new_address.text": "新住所", "new_address.postal_code": "郵便番号", "destination.text": "転出先住所", "destination.postal_code": "転出先の郵便番号",
    "destination": "転出先", "destination_country": "転出先の国・地域", "planned_date": "転出予定日", "move_date": "異動日", "notified_date": "届出日",
    "death_date": "死亡日", "correction_date": "修正日", "explanation": "理由", "family_register.honseki": "本籍",
    "family_register.hittousha": "筆頭者", "household.household_id": "世帯", "household.relationship": "続柄", "household": "世帯",
    "became_resident_on": "住民となった日", "address_text": "住所（市区町村外）", "address_municipality_code": "住所地の団体コード",
    "postal_code": "郵便番号", "reason": "理由", "note": "備考", "individual_number": "個人番号", "impression": "印影の説明",
    "registered_on": "登録日", "holder_resident_code": "登録者の住民票コード", "ended_on": "廃止日", "resident_code": "住民票コード",
    "resident_codes": "転出する人", "remaining_head": "残る世帯の世帯主", "persons": "転入する人",
    "victim": "申出者の住民票コード", "family": "同一世帯の者", "kind": "種別", "basis": "根拠", "basis_issuer": "意見を述べた機関",
    "basis_reference": "文書番号", "perpetrators": "加害者", "perpetrators.name": "加害者の氏名", "perpetrators.name_kana": "加害者のフリガナ",
    "honseki_municipality_code": "本籍地の団体コード", "applied_on": "申出日", "outcome": "決定", "valid_from": "措置の開始日",
    "requester": "請求者", "requester.name": "請求者の氏名", "requester.purpose": "請求事由", "requester.organisation": "所属",
    "requester.name_kana": "請求者のフリガナ", "requester.address": "請求者の住所", "decision": "審査結果",
}
ERROR_TYPES = {
    "missing": "入力してください", "string_too_short": "入力してください", "string_too_long": "長すぎます",
    "string_pattern_mismatch": "形式が正しくありません", "date_from_datetime_parsing": "日付の形式が正しくありません",
    "date_parsing": "日付の形式が正しくありません", "date_type": "日付の形式が正しくありません", "enum": "選択肢から選んでください",
    "literal_error": "選択肢から選んでください", "int_parsing": "数字で入力してください", "string_type": "入力してください",
}


class Form:
    def __init__(self, values: dict[str, list[str]]):
        self._values = values

    def get(self, name: str) -> str | None:
        """The trimmed value, or None for an empty or missing field."""
        value = (self._values.get(name) or [""])[0].strip()
        return value or None

    def list(self, name: str) -> list[str]:
        return [v.strip() for v in self._values.get(name, []) if v.strip()]

    def flat(self) -> dict[str, str]:
        return {k: (v[0] if v else "") for k, v in self._values.items()}


async def read_form(request: Request) -> Form:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return Form({})
    return Form(parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def japanese_errors(exc: ValidationError) -> list[str]:
    """One line a clerk can act on per invalid field."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
        label = FIELD_LABELS.get(loc) or FIELD_LABELS.get(loc.split(".")[0]) or loc or "入力"
        text = ERROR_TYPES.get(err.get("type", ""))
        if text is None:
            message = str(err.get("msg", "")).removeprefix("Value error, ")
            text = "使えない文字が含まれています" if "outside the allowed set" in message else f"入力内容を確認してください（{message}）"
        out.append(f"{label}: {text}")
    return out

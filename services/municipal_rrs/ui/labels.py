"""Japanese labels and date formats of the staff screens (the contracts keep ASCII values).

Dates and times are the machine's local time, like ``date.today()`` everywhere
in the register: a municipality runs its register in JST.
"""

from __future__ import annotations

from datetime import date, datetime

CHANGE_REASON = {
    "birth": "出生", "death": "死亡", "move_within": "転居", "move_in": "転入", "move_out": "転出", "name_change": "氏名の変更",
    "correction": "届出による修正", "ex_officio_record": "職権記載", "ex_officio_removal": "職権消除", "ex_officio_correction": "職権修正",
    "ex_officio_restoration": "職権回復", "household_change": "世帯変更", "move_out_cancellation": "転出取消",
}
STATUS = {"active": "住民", "deceased": "死亡により消除", "removed": "消除", "moving_out": "転出予定"}
SEX = {"male": "男", "female": "女"}
NOTICE_KIND = {
    "move-out-certificate/v1": "転入予約（転出証明書情報）",
    "move-out-withdrawal/v1": "転出取消（転入予約の取下げ）",
    "move-in-notice/v1": "転入通知",
    "move-in-reply/v1": "転入通知への回答",
    "online-filing/v1": "オンライン届出",
    "online-confirmation/v1": "住所確認コード",
    "support-measure/v1": "支援措置の通知",
    "support-measure-ack/v1": "支援措置の受領確認",
    "certificate-request-attempt/v1": "他団体での交付請求（広域交付）",
}
NON_RESIDENT_REASON = {
    "property_tax": "固定資産税の納税義務者", "resident_tax": "住民税の課税", "health_insurance": "国民健康保険（住所地特例）",
    "pension": "国民年金", "other": "その他",
}
NON_RESIDENT_STATUS = {"active": "管理中", "linked": "住民票と連携済み", "closed": "管理終了"}
SEAL_STATUS = {"registered": "登録中", "ended": "廃止・抹消"}
SEAL_END_REASON = {
    "abolished": "廃止申請", "lost": "亡失", "moved_out": "転出による職権抹消", "died": "死亡による職権抹消", "removed": "職権消除による職権抹消",
}
#: 元号 and the first day of each (明治 before 1873 is out of the register's range)
ERAS = ((date(2019, 5, 1), "令和"), (date(1989, 1, 8), "平成"), (date(1926, 12, 25), "昭和"), (date(1912, 7, 30), "大正"), (date(1868, 1, 25), "明治"))


def wareki(value: date | str | None) -> str:
    """A date as the counter writes it: 令和8年11月20日."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.astimezone().date()
    for start, name in ERAS:
        if value >= start:
            year = value.year - start.year + 1
            return f"{name}{'元' if year == 1 else year}年{value.month}月{value.day}日"
    return f"{value.year}年{value.month}月{value.day}日"


def local_time(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M")


def today() -> date:
    """The register's day (date.today(), as the use cases use it)."""
    return date.today()


def start_of_today() -> datetime:
    return datetime.combine(date.today(), datetime.min.time()).astimezone()


def label(table: dict[str, str], value) -> str:
    key = getattr(value, "value", value)
    return table.get(str(key), str(key)) if key is not None else ""


# --- DV等支援措置 (contracts/dv.py) ---------------------------------------------------------------------------
MEASURE_KIND = {"dv": "DV（配偶者からの暴力）", "stalking": "ストーカー行為等", "child_abuse": "児童虐待", "similar": "その他これらに準ずる行為"}
MEASURE_BASIS = {
    "police_opinion": "警察署長等の意見", "support_centre_opinion": "配偶者暴力相談支援センター等の意見",
    "child_guidance_opinion": "児童相談所長の意見", "court_protection_order": "裁判所の保護命令",
}
MEASURE_STATUS = {"applied": "申出受付（決定前も保護）", "active": "支援措置実施中", "expired": "期間満了", "cancelled": "終了（本人の申出）", "refused": "不実施"}
MEASURE_ACTION = {"applied": "申出受付", "approved": "実施決定", "refused": "不実施決定", "extended": "延長", "expired": "期間満了", "cancelled": "終了",
                  "taken_over": "転入による引継ぎ"}
ALERT_KIND = {"measure_received": "他団体からの支援措置の受信", "delivery_failed": "支援措置の送達未確認", "expiring": "支援措置の期間満了が近い",
              "request_refused": "加害者からの交付請求を拒否"}
REQUESTER_RELATION = {"self": "本人", "household_member": "同一世帯の者", "agent": "代理人", "third_party": "第三者"}
REQUEST_STATE = {"issued": "交付", "under_review": "審査中", "refusal_pending": "審査中（支援措置により拒否・確認待ち）", "asking_home": "住所地に照会中",
                 "refused": "交付しない", "not_found": "該当なし", "failed": "照会不能"}
CERTIFICATE_TYPE = {"juminhyo_copy": "住民票の写し", "removed_record": "除票の写し", "koseki_fuhyo": "戸籍の附票の写し", "inspection": "閲覧"}

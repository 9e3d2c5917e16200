"""The counter staff screens (/staff on each register) in real headless Chromium (R-DV-2, R-REL-1).

A protected person's record opens with a red, flashing alert that must be
acknowledged before anything is issued — the server refuses otherwise, and
the acknowledgement is a row in the register's table; a measure received
from another municipality stays at the top of every screen until a clerk
acknowledges it; and the everyday paths: search, the record, a birth, a
certificate to print, a 転入 from the 転入予約 list, a seal that ends with
the holder's death. At the counter's usual screen sizes, without sideways
scrolling.
"""

from __future__ import annotations

import uuid
from datetime import date

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.helpers import address_in, birth_body, register

pytest.importorskip("services.municipal_rrs.dv", reason="the DV backend (services/municipal_rrs/dv.py) is not in this tree: the staff screens stay closed without it")

CHIYODA, SHIBUYA, TOYONAKA = "131016", "131130", "272035"
def _today() -> str:
    """Today, asked when it is needed: a suite that runs across midnight must not date a move before a birth."""
    return date.today().isoformat()
COUNTER = {"viewport": {"width": 1366, "height": 768}, "locale": "ja-JP"}
WIDE = {"viewport": {"width": 1920, "height": 1080}, "locale": "ja-JP"}
NARROW = {"viewport": {"width": 1024, "height": 768}, "locale": "ja-JP"}
DV_RED = "rgb(209, 0, 31)"


def rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def log_in(page, network, municipality: str, username: str, role: str = "clerk") -> None:
    """Fill the login form as the member of staff ``username`` (enrolled with ``role`` on first use): password and a fresh TOTP code."""
    account = network.staff.ensure(municipality, username, role)
    page.fill("#username", username)
    page.fill("#password", account["password"])
    page.fill("#totp", network.staff.fresh_code(municipality, username))
    page.click("button[type=submit]")


def logged_in(browser, network, municipality: str, staff_id: str, *, role: str = "clerk", **options):
    context = browser.new_context(**(options or COUNTER))
    page = context.new_page()
    page.goto(f"{rrs(network, municipality)}/staff")
    assert "/staff/login" in page.url, "without a session the screens ask for a login"
    log_in(page, network, municipality, staff_id, role)
    page.wait_for_url("**/staff")
    return context, page


def csrf_of(page) -> str:
    """The session's CSRF token, as every form of the screens carries it."""
    return page.locator("input[name=csrf]").first.get_attribute("value")


def arrive(page, path_and_query: str) -> None:
    """Wait for a navigation to a URL containing this path and query (a glob would read "?" as a wildcard)."""
    page.wait_for_url(lambda url: path_and_query in url)


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def adult(network, municipality: str, *, family_name: str | None = None, family_kana: str | None = None) -> dict:
    body = birth_body(municipality, family_name=family_name, family_kana=family_kana, born=date(1988, 5, 14))
    body.update(reason="ex_officio_record", became_resident_on=_today())
    return register(network, municipality, body)


def protect(network, municipality: str, code: str, *, perpetrator: str, honseki: str | None = None) -> dict:
    """A DV measure applied for and approved through the register's JSON API (the DV backend's own path)."""
    body = {"victim": code, "kind": "dv", "basis": "police_opinion", "basis_issuer": "麹町警察署", "perpetrators": [{"name": perpetrator}]}
    if honseki:
        body["honseki_municipality_code"] = honseki
    applied = httpx.post(f"{rrs(network, municipality)}/v1/support-measures", auth=network.staff_auth(), json=body, timeout=20)
    assert applied.status_code == 201, applied.text
    decided = httpx.post(f"{rrs(network, municipality)}/v1/support-measures/{applied.json()['measure_id']}/decision", auth=network.staff_auth("supervisor"), json={"outcome": "approve"}, timeout=20)
    assert decided.status_code == 200, decided.text
    return decided.json()


def test_search_record_birth_and_certificate(network, browser, screenshot, db):
    rrs_url = rrs(network, SHIBUYA)
    context = browser.new_context(**COUNTER)
    page = context.new_page()
    page.goto(f"{rrs_url}/staff/births/new")
    assert page.locator("html").get_attribute("lang") == "ja"
    assert page.locator("h1").inner_text() == "窓口業務へのログイン"
    screenshot(page, "staff-login", full_page=False)
    log_in(page, network, SHIBUYA, "shibuya-7")
    page.wait_for_url("**/staff/births/new")  # back where the clerk wanted to go

    # 出生届 through the form
    kana = "テスト" + "".join("アイウエオカキクケコ"[int(c, 16) % 10] for c in uuid.uuid4().hex[:4])
    page.fill("#family_name", "渋谷")
    page.fill("#given_name", "桜")
    page.fill("#family_name_kana", kana)
    page.fill("#given_name_kana", "サクラ")
    page.fill("#birth_date", _today())
    page.check("input[name=sex][value=female]")
    address = address_in(SHIBUYA)
    page.fill("#address_text", address["text"])
    page.fill("#postal_code", address["postal_code"])
    page.fill("#honseki", "東京都渋谷区宇田川町1")
    page.fill("#hittousha", "渋谷太郎")
    screenshot(page, "staff-birth")
    page.click("#register-birth")
    arrive(page, "?done=birth")
    assert "出生届を登録しました" in page.locator(".done").inner_text()
    code = page.locator("#resident-code").inner_text()
    assert page.locator("dd.name").inner_text() == "渋谷　桜"
    assert address["text"] in page.locator("dd.address").inner_text()
    assert page.locator("table.history tbody tr").count() == 1 and "shibuya-7" in page.locator("table.history").inner_text()
    assert page.locator("#dv-alert").count() == 0, "no measure, no alert"
    record = httpx.get(f"{rrs_url}/v1/residents/{code}", auth=network.staff_auth(), timeout=10).json()
    assert record["name"]["family_name_kana"] == kana and record["status"] == "active"

    # search by reading finds the record; it opens from the result
    page.goto(f"{rrs_url}/staff")
    page.fill("#kana", kana)
    page.click("#search-button")
    row = page.locator(f"tr[data-resident-code='{code}']")
    row.wait_for()
    assert "渋谷" in row.inner_text() and "令和" in row.inner_text()
    assert fits(page)
    screenshot(page, "staff-search", full_page=False)
    row.locator("a").first.click()
    page.wait_for_url(f"**/staff/residents/{code}")
    screenshot(page, "staff-record", full_page=False)

    # 住民票の写し for the person themself: a printable page
    page.click("#issue-link")
    page.wait_for_url(f"**/staff/residents/{code}/certificate")
    page.click("#issue-button")
    page.wait_for_url("**/staff/certificates/*")
    certificate = page.locator("#certificate")
    assert "住民票の写し" in certificate.locator("h1").inner_text().replace(" ", "")
    assert certificate.locator(".cert-name").inner_text() == "渋谷　桜" and address["text"] in certificate.locator(".cert-address").inner_text()
    assert "渋谷区長" in certificate.inner_text()
    request_id = page.locator("#request-id").inner_text()
    screenshot(page, "staff-certificate", full_page=False)
    page.emulate_media(media="print")
    assert not page.locator("header.site").is_visible() and not page.locator("#print-button").is_visible(), "print shows the document only"
    assert page.locator("#certificate").is_visible()
    page.emulate_media(media="screen")
    issued = db(f"rrs_{SHIBUYA}").rows("select state, handled_by, subject_code from certificate_requests where id = %s", (uuid.UUID(request_id),))
    assert issued == [("issued", "shibuya-7", code)]
    # a reload prints the same document again; it does not issue a second one
    page.reload()
    assert page.locator("#request-id").inner_text() == request_id
    assert db(f"rrs_{SHIBUYA}").value("select count(*) from certificate_requests where subject_code = %s", (code,)) == 1

    # a third party's request goes to review; a reviewer issues it from the review screen
    page.goto(f"{rrs_url}/staff/residents/{code}/certificate")
    page.check("input[name=relation][value=third_party]")
    page.fill("#requester_name", "債権者一郎")
    page.fill("#organisation", "債権回収株式会社")
    page.fill("#purpose", "債権回収のため住所の確認が必要")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("#issue-button")
    assert posted.value.status == 202 and "審査が必要です" in page.locator(".outcome-message").inner_text()
    # the review is a supervisor's (services/municipal_rrs/access.py): the clerk who took the request does not decide it
    page.goto(f"{rrs_url}/staff/certificate-reviews")
    pending = page.locator("table.reviews tr").filter(has_text="債権者一郎")
    pending.locator("input[name=reason]").fill("正当な理由があると認めた")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        pending.locator("button").click()
    assert refused.value.status == 403
    chief_context, chief = logged_in(browser, network, SHIBUYA, "shibuya-chief", role="supervisor")
    chief.goto(f"{rrs_url}/staff/certificate-reviews")
    pending = chief.locator("table.reviews tr").filter(has_text="債権者一郎")
    pending.locator("input[name=reason]").fill("正当な理由があると認めた")
    pending.locator("button").click()
    chief.wait_for_url("**/staff/certificates/*")
    assert chief.locator(".cert-name").inner_text() == "渋谷　桜" and "第三者" in chief.locator("#certificate").inner_text()
    chief_context.close()

    # the counter's screen sizes: nothing scrolls sideways
    for size in (NARROW, COUNTER, WIDE):
        page.set_viewport_size(size["viewport"])
        for path in (f"/staff/residents/{code}", f"/staff?kana={kana}", "/staff/births/new", "/staff/measures", "/staff/notices", "/staff/seals",
                     "/staff/non-residents", "/staff/certificate-reviews", "/staff/move-ins", f"/staff/residents/{code}/move-out"):
            page.goto(f"{rrs_url}{path}")
            assert fits(page), f"{path} scrolls sideways at {size['viewport']['width']} px"
        if size is NARROW:
            page.goto(f"{rrs_url}/staff/residents/{code}")
            screenshot(page, "staff-record-1024", full_page=False)
    context.close()


def test_protected_record_alert_blocks_issuance_until_acknowledged(network, browser, screenshot, db):
    person = adult(network, CHIYODA)
    code = person["resident_code"]
    measure = protect(network, CHIYODA, code, perpetrator="加害太郎")
    measure_id = measure["measure_id"]
    rrs_url = rrs(network, CHIYODA)
    context, page = logged_in(browser, network, CHIYODA, "chiyoda-5")
    page.goto(f"{rrs_url}/staff/residents/{code}")

    alert = page.locator("#dv-alert")
    assert alert.is_visible()
    assert page.evaluate("document.querySelector('main').firstElementChild.id") == "dv-alert", "the alert is the first thing on the record"
    assert alert.evaluate("e => e.getBoundingClientRect().top") < 200, "at the top of the screen"
    assert "支援措置対象者" in alert.inner_text() and "加害太郎" in alert.inner_text()
    assert "flashing" in alert.get_attribute("class")
    assert alert.evaluate("e => getComputedStyle(e).animationName") == "dv-flash"
    assert alert.evaluate("e => getComputedStyle(e).animationIterationCount") == "infinite"
    assert alert.evaluate("e => getComputedStyle(e).fontWeight") == "700"
    assert page.locator("#address-masked").is_visible() and person["address"]["text"] not in page.locator("main").inner_text(), \
        "the address is not shown before the acknowledgement"
    page.emulate_media(reduced_motion="reduce")  # the picture shows the alert's red phase, not a random frame
    screenshot(page, "staff-record-protected", full_page=False)
    page.emulate_media(reduced_motion="no-preference")

    # issuance is blocked: the button is disabled, and the server refuses a post made anyway
    page.goto(f"{rrs_url}/staff/residents/{code}/certificate")
    assert page.locator("#issue-button").is_disabled()
    forced = page.request.post(f"{rrs_url}/staff/residents/{code}/certificate", form={"relation": "self", "csrf": csrf_of(page)}, max_redirects=0)
    assert forced.status == 409 and "警告を確認してください" in forced.text()
    assert db(f"rrs_{CHIYODA}").value("select count(*) from certificate_requests where subject_code = %s", (code,)) == 0
    assert db(f"rrs_{CHIYODA}").value("select count(*) from staff_alert_acknowledgements where resident_code = %s", (code,)) == 0

    # the clerk acknowledges: recorded (who, when, which record, which measure)
    page.click("#acknowledge-alert")
    arrive(page, f"/staff/residents/{code}/certificate?done=acknowledged")
    rows = db(f"rrs_{CHIYODA}").rows("select staff_id, resident_code, measure_id, session_id, acknowledged_at from staff_alert_acknowledgements where resident_code = %s", (code,))
    assert [(r[0], r[1], r[2]) for r in rows] == [("chiyoda-5", code, measure_id)]
    assert rows[0][3] and rows[0][4] is not None
    alert = page.locator("#dv-alert")
    assert "acknowledged" in alert.get_attribute("class") and alert.evaluate("e => getComputedStyle(e).animationName") == "none"
    assert "確認済み" in alert.inner_text(), "the alert stays, marked as acknowledged"
    assert not page.locator("#issue-button").is_disabled()

    # a perpetrator acting as an agent is refused out of band: the screen says what it says for any review, the queue has the refusal
    page.check("input[name=relation][value=agent]")
    page.fill("#requester_name", "加害太郎")
    with page.expect_response(lambda r: r.request.method == "POST") as refused:
        page.click("#issue-button")
    assert refused.value.status == 202
    assert "審査が必要です" in page.locator(".outcome-message").inner_text() and "加害" not in page.locator(".outcome-message").inner_text()
    assert db(f"rrs_{CHIYODA}").rows("select state, handled_by from certificate_requests where subject_code = %s", (code,)) == [("refusal_pending", "chiyoda-5")]

    # the person themself gets the copy
    page.check("input[name=relation][value=self]")
    page.click("#issue-button")
    page.wait_for_url("**/staff/certificates/*")
    assert person["address"]["text"] in page.locator(".cert-address").inner_text()
    page.goto(f"{rrs_url}/staff/residents/{code}")
    assert person["address"]["text"] in page.locator("dd.address").inner_text()
    page.goto(f"{rrs_url}/staff/measures")
    listed = page.locator(f"tr[data-measure-id='{measure_id}']")
    assert "支援措置実施中" in listed.locator(".measure-status").inner_text() and "加害太郎" in listed.inner_text()
    screenshot(page, "staff-measures", full_page=False)

    # another clerk, or the same clerk after logging in again, must acknowledge for themself
    other_context, other = logged_in(browser, network, CHIYODA, "chiyoda-6", **NARROW)
    other.goto(f"{rrs_url}/staff/residents/{code}/certificate")
    assert other.locator("#issue-button").is_disabled() and "flashing" in other.locator("#dv-alert").get_attribute("class")
    assert fits(other)
    other.goto(f"{rrs_url}/staff/residents/{code}/correction")  # the correction form would show the address: not before the acknowledgement
    assert other.locator("#dv-alert").is_visible() and person["address"]["text"] not in other.content()
    other_context.close()
    page.click("header .who button")
    page.wait_for_url("**/staff/login")
    log_in(page, network, CHIYODA, "chiyoda-5")
    page.wait_for_url("**/staff")
    again = page.request.post(f"{rrs_url}/staff/residents/{code}/certificate", form={"relation": "self", "csrf": csrf_of(page)}, max_redirects=0)
    assert again.status == 409, "a new login session asks again"
    context.close()

    # prefers-reduced-motion: no flashing, still red and bold
    calm = browser.new_context(**COUNTER, reduced_motion="reduce")
    page = calm.new_page()
    page.goto(f"{rrs_url}/staff/login")
    log_in(page, network, CHIYODA, "chiyoda-7")
    page.wait_for_url("**/staff")
    page.goto(f"{rrs_url}/staff/residents/{code}")
    alert = page.locator("#dv-alert")
    assert alert.evaluate("e => getComputedStyle(e).animationName") == "none"
    assert alert.evaluate("e => getComputedStyle(e).backgroundColor") == DV_RED
    assert alert.evaluate("e => getComputedStyle(e).fontWeight") == "700"
    calm.close()


def test_incoming_measure_alert_stays_until_acknowledged(network, browser, screenshot):
    # a measure at Chiyoda whose 本籍地 is Toyonaka reaches Toyonaka's register without manual work
    person = adult(network, CHIYODA)
    code = person["resident_code"]
    measure = protect(network, CHIYODA, code, perpetrator="追跡次郎", honseki=TOYONAKA)

    def received():
        held = httpx.get(f"{rrs(network, TOYONAKA)}/v1/support-measures/{measure['measure_id']}", auth=network.staff_auth(), timeout=10)
        return held.status_code == 200 and held.json()["revision"] == measure["revision"]

    wait_until(received, timeout=60, what="the decided measure received at Toyonaka")
    context, page = logged_in(browser, network, TOYONAKA, "toyonaka-3")
    banner = page.locator(f".incoming-alerts .dv-alert[data-measure-id='{measure['measure_id']}']")
    assert banner.count() == 1, "one banner per measure, showing its newest revision"
    assert "支援措置実施中" in banner.inner_text()
    assert "他団体から支援措置" in banner.inner_text() and "千代田区" in banner.inner_text()
    assert banner.evaluate("e => getComputedStyle(e).animationName") == "dv-flash"
    page.emulate_media(reduced_motion="reduce")
    screenshot(page, "staff-incoming-measure", full_page=False)
    page.emulate_media(reduced_motion="no-preference")
    # it stays on every screen until acknowledged
    for path in ("/staff/births/new", "/staff/seals", "/staff/notices"):
        page.goto(f"{rrs(network, TOYONAKA)}{path}")
        assert banner.is_visible(), f"the alert is gone on {path} before anyone acknowledged it"
    banner.locator("button.ack").click()
    arrive(page, "/staff/notices?done=measure-alert")
    assert banner.count() == 0
    alerts = httpx.get(f"{rrs(network, TOYONAKA)}/v1/support-measure-alerts", auth=network.staff_auth(), params={"resident_code": code, "include_closed": "true"}, timeout=10).json()
    seen = [a for a in alerts if a["measure_id"] == measure["measure_id"] and a["kind"] == "measure_received"]
    assert seen and all(a["acknowledged_by"] == "toyonaka-3" and not a["open"] for a in seen), seen
    assert "toyonaka-3" in page.locator("#received-measures").inner_text()
    context.close()

    # the home municipality hears who saw it
    def seen_at_home():
        deliveries = httpx.get(f"{rrs(network, CHIYODA)}/v1/support-measures/{measure['measure_id']}/deliveries", auth=network.staff_auth(), timeout=10).json()
        return [d for d in deliveries if d["target_municipality_code"] == TOYONAKA and d["revision"] == measure["revision"]
                and d["staff_acknowledged_by"] == "toyonaka-3"]

    wait_until(seen_at_home, timeout=60, what="the staff acknowledgement back at Chiyoda")


def test_move_in_from_reservation_seal_and_death(network, browser, screenshot):
    person = adult(network, CHIYODA)
    code = person["resident_code"]
    out = httpx.post(f"{rrs(network, CHIYODA)}/v1/move-outs", auth=network.staff_auth(), timeout=20, json={
        "resident_codes": [code], "destination": address_in(SHIBUYA), "planned_date": _today(), "notified_date": _today()})
    assert out.status_code == 201, out.text
    wait_until(lambda: code in {c["resident_code"] for c in httpx.get(f"{rrs(network, SHIBUYA)}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()},
               what="転入予約 at Shibuya")
    rrs_url = rrs(network, SHIBUYA)
    context, page = logged_in(browser, network, SHIBUYA, "shibuya-9")

    # 転入 from the 転入予約 list
    page.goto(f"{rrs_url}/staff/move-ins")
    form = page.locator("form.reservation").filter(has=page.locator(f"input[value='{code}']"))
    assert person["name"]["family_name"] in form.inner_text() and "千代田区" in form.inner_text()
    screenshot(page, "staff-move-ins", full_page=False)
    new_address = address_in(SHIBUYA)
    form.locator("input[name=address_text]").fill(new_address["text"])
    form.locator("input[name=postal_code]").fill(new_address["postal_code"])
    form.locator("button[type=submit]").click()
    arrive(page, f"/staff/residents/{code}?done=move-in")
    assert new_address["text"] in page.locator("dd.address").inner_text() and "転入" in page.locator("table.history").inner_text()

    # 印鑑登録 through the form, then a 死亡届 through the form: the seal ends with the record
    page.goto(f"{rrs_url}/staff/seals?holder={code}")
    page.fill("#holder", code)
    page.fill("#impression", "「" + person["name"]["family_name"] + "」丸印 直径15mm")
    page.click("#register-seal button[type=submit]")
    arrive(page, "/staff/seals?done=seal")
    seal_row = page.locator("table.seals tbody tr").first
    assert "登録中" in seal_row.inner_text()
    screenshot(page, "staff-seals", full_page=False)
    page.goto(f"{rrs_url}/staff/residents/{code}/death")
    page.click("button.danger")
    arrive(page, f"/staff/residents/{code}?done=death")
    assert "死亡により消除" in page.locator("h1").inner_text()
    assert "死亡による職権抹消" in page.locator("ul.seals").inner_text()
    seals = httpx.get(f"{rrs_url}/v1/seal-registrations", auth=network.staff_auth(), params={"holder_resident_code": code}, timeout=10).json()
    assert [(s["status"], s["end_reason"], s["ended_by"]) for s in seals] == [("ended", "died", "shibuya-9")]

    # a refused step comes back as a Japanese message on the form, nothing written
    page.goto(f"{rrs_url}/staff/residents/{code}/death")
    page.click("button.danger")
    assert "登録できません" in page.locator(".errors").inner_text()
    context.close()


def test_non_resident_screen_links_a_person_who_moved_in(network, browser, screenshot):
    person = adult(network, SHIBUYA)
    context, page = logged_in(browser, network, SHIBUYA, "tax-4")
    rrs_url = rrs(network, SHIBUYA)
    page.goto(f"{rrs_url}/staff/non-residents")
    page.fill("#family_name", person["name"]["family_name"])
    page.fill("#given_name", person["name"]["given_name"])
    page.fill("#family_name_kana", person["name"]["family_name_kana"])
    page.fill("#given_name_kana", person["name"]["given_name_kana"])
    page.fill("#birth_date", person["birth_date"])
    page.fill("#address_text", "大阪府豊中市中桜塚3-1-1")
    page.fill("#address_municipality_code", TOYONAKA)
    page.select_option("#reason", "property_tax")
    page.click("#register-non-resident button[type=submit]")
    arrive(page, "?done=non-resident")
    # no 個人番号: the resident with the same birth date and reading is a candidate, and staff link them
    candidate = page.locator("table.candidates tr").filter(has_text=person["resident_code"])
    assert candidate.count() == 1
    screenshot(page, "staff-non-resident", full_page=False)
    candidate.locator("button").click()
    arrive(page, "?done=linked")
    assert page.locator("#linked-resident").inner_text() == person["resident_code"]
    page.click("#linked-resident")
    page.wait_for_url(f"**/staff/residents/{person['resident_code']}")
    assert "住登外者としての記録" in page.locator("main").inner_text()
    context.close()


def test_support_measure_lifecycle_on_the_measures_screen(network, browser):
    victim = adult(network, SHIBUYA)
    code = victim["resident_code"]
    rrs_url = rrs(network, SHIBUYA)
    context, page = logged_in(browser, network, SHIBUYA, "dv-desk-1", role="supervisor")
    page.goto(f"{rrs_url}/staff/residents/{code}")
    page.click("text=支援措置の申出を受け付ける")
    assert page.locator("#victim").input_value() == code
    page.select_option("#kind", "stalking")
    page.select_option("#basis", "police_opinion")
    page.fill("#basis_issuer", "渋谷警察署")
    page.fill("#perpetrator_name_1", "付纏三郎")
    page.click("#apply-measure")
    arrive(page, "/staff/measures?done=measure")
    [measure] = httpx.get(f"{rrs_url}/v1/residents/{code}/support-measures", auth=network.staff_auth(), timeout=10).json()
    row = page.locator(f"tr[data-measure-id='{measure['measure_id']}']")
    assert "申出受付" in row.locator(".measure-status").inner_text(), "protected from the application on"

    row.locator("button.decide").click()  # 実施 is the default
    arrive(page, "/staff/measures?done=measure")
    assert "支援措置実施中" in row.locator(".measure-status").inner_text()
    page.goto(f"{rrs_url}/staff/measures?expiring_within_days=366")
    assert row.count() == 1, "an active measure ends within a year"
    page.goto(f"{rrs_url}/staff/measures?expiring_within_days=30")
    assert row.count() == 0
    page.goto(f"{rrs_url}/staff/measures")
    row.locator("summary").click()
    row.locator("input[name=explanation]").fill("本人から終了の申出があった")
    row.locator("form[action$='/cancellation'] button").click()
    arrive(page, "/staff/measures?done=measure")
    assert "終了" in row.locator(".measure-status").inner_text()
    held = httpx.get(f"{rrs_url}/v1/support-measures/{measure['measure_id']}", auth=network.staff_auth(), timeout=10).json()
    assert held["status"] == "cancelled" and [s["by"] for s in held["history"]] == ["dv-desk-1"] * 3
    page.goto(f"{rrs_url}/staff/residents/{code}")
    assert page.locator("#dv-alert").count() == 0, "a cancelled measure no longer alerts"
    context.close()

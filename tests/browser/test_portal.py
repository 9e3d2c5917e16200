"""The resident portal in real headless Chromium: login with the
municipality's credential, the list newest first with incidents flagged, the
proof checked in the page and downloaded for the offline verifier, a phone
screen without sideways scrolling, and one resident never seeing another's."""

from __future__ import annotations

import json

import httpx

from tests.conftest import wait_until

from tests.e2e.test_provision_log import (
    LOG, log_key, operator_token, proof_of, provide, registered_at_national, resident_auth, verifier,
)

PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 1, "is_mobile": True, "has_touch": True, "locale": "ja-JP"}
DESKTOP = {"viewport": {"width": 1100, "height": 900}, "locale": "ja-JP"}
EXPLANATION = "職員が照会の対象者を取り違え、あなたの情報を誤って照会しました。照会結果は直ちに廃棄し、再発防止の研修を行いました。"


def _resident_with_history(net):
    person = registered_at_national(net)
    code = person["resident_code"]
    older = provide(net, code, reason="年金受給資格の確認")
    newer = provide(net, code, reason="現況届の省略のため")
    auth = resident_auth(net, code, "131016")
    proof_of(net, auth, newer)  # both are in the log under a signed checkpoint now (same partition, in order)
    recorded = httpx.post(f"{net.url(LOG)}/v1/incidents", json={"kind": "wrong-lookup", "record_ids": [older], "explanation": EXPLANATION},
                          headers={"authorization": f"Bearer {operator_token(net, 'agency-pension-service')}"})
    assert recorded.status_code == 201, recorded.text
    wait_until(lambda: all(i["verified"] for r in httpx.get(f"{net.url(LOG)}/v1/me/log", headers=auth).json()["records"] for i in r["incidents"]),
               timeout=30, what="the incident's leaf under a signed checkpoint")
    return person, auth["authorization"].removeprefix("Bearer "), older, newer


def test_resident_logs_in_and_sees_who_received_their_data(network, browser, screenshot, tmp_path):
    person, credential, older, newer = _resident_with_history(network)
    context = browser.new_context(**PHONE, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{network.url(LOG)}/portal")
    assert page.url.endswith("/portal/login"), "without a session the portal asks to log in"
    assert page.locator("html").get_attribute("lang") == "ja"
    screenshot(page, "portal-login-phone")

    page.fill("#credential", credential)
    page.click("button[type=submit]")
    page.wait_for_url("**/portal")
    assert page.locator("h1").inner_text() == "提供記録の確認"
    assert person["resident_code"] in page.locator(".lead").inner_text()
    ids = page.locator("li.record").evaluate_all("els => els.map(e => e.dataset.recordId)")
    assert ids == [newer, older], "newest first"

    first, second = page.locator(f"li.record[data-record-id='{newer}']"), page.locator(f"li.record[data-record-id='{older}']")
    assert first.locator(".recipient").inner_text() == "日本年金機構"
    assert "氏名" in first.locator(".items").inner_text() and "住所" in first.locator(".items").inner_text()
    assert first.locator(".reason").inner_text() == "現況届の省略のため"
    assert "全国サーバ" in first.locator(".provider").inner_text()
    assert first.locator(".badge.ok").count() == 1 and second.locator(".badge.ok").count() == 1
    assert first.locator(".incident").count() == 0
    incident = second.locator(".incident")
    assert "誤った照会" in incident.inner_text() and EXPLANATION in incident.inner_text()

    # the proof is checked in the page (Web Crypto), then downloaded and checked offline
    first.locator(".verify-button").click()
    result = first.locator(".verify-result")
    result.filter(has_text="検証成功").wait_for(timeout=30_000)
    assert "ok" in (result.get_attribute("class") or "")
    # the record with an incident: the incident displayed is checked against its own leaf as well
    second.locator(".verify-button").click()
    second.locator(".verify-result").filter(has_text="事故の記録 1 件も一致").wait_for(timeout=30_000)
    # the check covers what is displayed: a page showing another agency's name fails it
    first.locator(".recipient").evaluate("el => { el.textContent = '外務省'; }")
    first.locator(".verify-button").click()
    result.filter(has_text="検証失敗").wait_for(timeout=30_000)
    assert "failed" in (result.get_attribute("class") or "")
    page.reload()
    first, second = page.locator(f"li.record[data-record-id='{newer}']"), page.locator(f"li.record[data-record-id='{older}']")

    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "no sideways scrolling on a phone"
    assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 16
    screenshot(page, "portal-records-phone")

    with page.expect_download() as download_info:
        first.locator(".proof-link").click()
    path = tmp_path / "downloaded-proof.json"
    download_info.value.save_as(str(path))
    assert json.loads(path.read_text())["record_id"] == newer
    ok = verifier("inclusion", path, "--key", log_key(network), "--resident-code", person["resident_code"])
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # the session cookie is out of reach of scripts and is dropped at logout
    cookie = next(c for c in context.cookies() if c["name"] == "jukinet_portal")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert "jukinet_portal" not in page.evaluate("document.cookie")
    page.click(".logout button")
    page.wait_for_url("**/portal/login")
    page.goto(f"{network.url(LOG)}/portal")
    assert page.url.endswith("/portal/login")
    context.close()


def test_desktop_layout_and_login_link(network, browser, screenshot):
    person, credential, older, newer = _resident_with_history(network)
    context = browser.new_context(**DESKTOP)
    page = context.new_page()
    page.goto(f"{network.url(LOG)}/portal/login?credential={credential}")
    page.wait_for_url("**/portal")
    assert page.locator("li.record").count() == 2
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    screenshot(page, "portal-records-desktop", full_page=False)
    context.close()


def test_a_resident_never_sees_another_residents_records(network, browser):
    _, _, older, newer = _resident_with_history(network)
    other = registered_at_national(network, "131130")
    other_credential = resident_auth(network, other["resident_code"], "131130")["authorization"].removeprefix("Bearer ")
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.goto(f"{network.url(LOG)}/portal/login?credential={other_credential}")
    page.wait_for_url("**/portal")
    assert page.locator("li.record").count() == 0
    assert "まだ提供記録はありません" in page.locator("main").inner_text()
    response = page.goto(f"{network.url(LOG)}/portal/provisions/{newer}/proof.json")
    assert response.status == 404
    context.close()


def test_a_bad_credential_is_refused_in_japanese(network, browser):
    context = browser.new_context(**PHONE)
    page = context.new_page()
    response = page.goto(f"{network.url(LOG)}/portal/login?credential=not-a-token")
    assert response.status == 401
    assert "この認証情報では確認できません" in page.locator(".error").inner_text()
    assert not [c for c in context.cookies() if c["name"] == "jukinet_portal"]
    # a token of the right issuer but for another purpose does not open the portal either
    agency = network.agency_token("pension-service", audience="provision-log")
    assert page.goto(f"{network.url(LOG)}/portal/login?credential={agency}").status == 401
    context.close()

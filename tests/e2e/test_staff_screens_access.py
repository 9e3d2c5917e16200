"""Who may use the counter staff screens, at the HTTP level: a logged-in member of staff, with forms
posted from the screens themselves. (The screens' behaviour is in tests/browser; the role × screen
table and the CSRF token in tests/e2e/test_staff_access.py.)"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("services.municipal_rrs.dv", reason="the staff screens stay closed without the DV backend")

CHIYODA = "131016"


def test_screens_ask_for_a_login_and_refuse_forms_from_another_site(network):
    base = network.url(f"municipal_rrs.{CHIYODA}")
    account = network.staff.ensure(CHIYODA, "screens-clerk-7", "clerk")
    with httpx.Client(base_url=base, timeout=20, follow_redirects=False) as client:
        for path in ("/staff", "/staff/residents/12345678901", "/staff/seals"):
            anonymous = client.get(path)
            assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/staff/login?next="), (path, anonymous.status_code)
        assert client.post("/staff/births/new", data={}).headers["location"].startswith("/staff/login")

        refused = client.post("/staff/login", data={"username": "screens-clerk-7", "password": "not the password", "totp": "123456"}, headers={"origin": base})
        assert refused.status_code == 401 and not client.cookies
        signed = client.post("/staff/login", data={"username": "screens-clerk-7", "password": account["password"],
                                                   "totp": network.staff.fresh_code(CHIYODA, "screens-clerk-7"), "next": "/staff"}, headers={"origin": base})
        assert signed.status_code == 303 and client.cookies, signed.text
        assert client.get("/staff").status_code == 200

        forged = client.post("/staff/births/new", data={"name": "x"}, headers={"origin": "https://elsewhere.example"})
        assert forged.status_code == 403 and "別のサイト" in forged.text
        also_forged = client.post("/staff/seals", data={}, headers={"sec-fetch-site": "cross-site"})
        assert also_forged.status_code == 403

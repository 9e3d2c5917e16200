"""JPKI on the running network: the counter issues certificates over keys made
on the card, the national server is the CA, changes revoke what they make
untrue (seen through a signed CRL and OCSP), a signed filing resolves the
serial only when it verifies, and the assurance ledger counts and resets."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, time, timedelta, timezone

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from services.common.tokens import load_private_key, sign_token
from tests.conftest import wait_until
from tests.e2e.helpers import Card, address_in, birth_body, register

JST = timezone(timedelta(hours=9))
NATIONAL = "national_server.national"
OID_NAME, OID_SEX, OID_BIRTH, OID_ADDRESS = (x509.ObjectIdentifier(f"1.2.392.200149.8.5.5.{n}") for n in (1, 3, 4, 5))


# --- helpers ----------------------------------------------------------------------------------


def _token(network, issuer: str, audience: str) -> str:
    return sign_token(load_private_key(network.private_keys / f"{issuer}.key"), issuer=issuer, audience=audience)


def _rrs(network, municipality: str) -> str:
    return network.url(f"municipal_rrs.{municipality}")


def _adult(network, db, municipality: str = "131016", born: date = date(1990, 1, 2)) -> dict:
    person = register(network, municipality, birth_body(municipality, born=born))
    _national_at(db, person["resident_code"], 1)
    return person


def _national_at(db, code: str, version: int) -> None:
    wait_until(lambda: (db("national").value("select version from identity where resident_code = %s", (code,)) or 0) >= version, what=f"{code} v{version} at national")


def _issue(network, code: str, card: Card, municipality: str = "131016", **keys) -> httpx.Response:
    return httpx.post(f"{_rrs(network, municipality)}/v1/residents/{code}/jpki-certificates", auth=network.staff_auth(), json=keys or card.keys(), timeout=10)


def _issued(network, code: str, card: Card) -> dict[str, dict]:
    response = _issue(network, code, card)
    assert response.status_code == 201, response.text
    return {c["kind"]: c for c in response.json()["certificates"]}


def _ca(network) -> x509.Certificate:
    response = httpx.get(f"{network.url(NATIONAL)}/v1/jpki/ca", timeout=10)
    assert response.status_code == 200, response.text
    return x509.load_pem_x509_certificate(response.content)


def _filing(certificate_pem: str, key, payload: bytes, *, purpose: str = "online-move-out", signed: bytes | None = None) -> dict:
    signature = key.sign(signed if signed is not None else payload, ec.ECDSA(hashes.SHA256()))
    return {"certificate_pem": certificate_pem, "payload": base64.b64encode(payload).decode(), "signature": base64.b64encode(signature).decode(), "purpose": purpose}


def _verify_at_cs(network, filing: dict, municipality: str = "131016") -> httpx.Response:
    """As the municipality does: its RRS hands the filing to its CS, which asks the national server."""
    return httpx.post(
        f"{network.url(f'cs_gateway.{municipality}')}/v1/rrs/jpki/verifications", json=filing,
        headers={"authorization": f"Bearer {_token(network, f'rrs-{municipality}', f'cs-{municipality}')}"}, timeout=10,
    )


def _status(network, serial: str) -> dict:
    return httpx.get(f"{network.url(NATIONAL)}/v1/jpki/certificates/{serial}/status", timeout=10).json()


def _crl(network, ca: x509.Certificate) -> x509.CertificateRevocationList:
    response = httpx.get(f"{network.url(NATIONAL)}/v1/jpki/crl", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
    return crl


def _ocsp(network, certificate: x509.Certificate, issuer: x509.Certificate, nonce: bytes = b"nonce-0123456789") -> ocsp.OCSPResponse:
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA1()).add_extension(x509.OCSPNonce(nonce), critical=False).build()
    response = httpx.post(
        f"{network.url(NATIONAL)}/v1/jpki/ocsp", content=request.public_bytes(serialization.Encoding.DER),
        headers={"content-type": "application/ocsp-request"}, timeout=10,
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/ocsp-response"
    return ocsp.load_der_ocsp_response(response.content)


def _assurance(network, code: str, municipality: str = "131016") -> dict:
    response = httpx.get(f"{_rrs(network, municipality)}/v1/residents/{code}/assurance", auth=network.staff_auth(), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _assurance_event(network, code: str, kind: str, municipality: str = "131016", purpose: str | None = "online-move-out") -> httpx.Response:
    return httpx.post(
        f"{network.url(f'cs_gateway.{municipality}')}/v1/rrs/assurance/{code}/events", json={"kind": kind, "purpose": purpose},
        headers={"authorization": f"Bearer {_token(network, f'rrs-{municipality}', f'cs-{municipality}')}"}, timeout=10,
    )


def _refusals(db, reason: str) -> int:
    return db("national").value("select count(*) from refusals where reason = %s", (reason,))


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"].endswith(f"/{slug}"), body
    return body


# --- issuance ------------------------------------------------------------------------------------


def test_the_counter_issues_both_certificates_with_the_items_from_the_national_store(network, db):
    person = _adult(network, db)
    code = person["resident_code"]
    card = Card()
    issued = _issued(network, code, card)
    assert set(issued) == {"signing", "authentication"}
    ca = _ca(network)

    signing = x509.load_pem_x509_certificate(issued["signing"]["certificate_pem"].encode())
    authentication = x509.load_pem_x509_certificate(issued["authentication"]["certificate_pem"].encode())
    for kind, certificate, key in (("signing", signing, card.signing), ("authentication", authentication, card.authentication)):
        certificate.verify_directly_issued_by(ca)
        assert certificate.issuer == ca.subject
        assert certificate.serial_number == int(issued[kind]["serial"])
        assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
        # valid until the 5th birthday after issuance, to the end of that day in Japan
        today = datetime.now(JST).date()
        year = today.year + (0 if date(today.year, 1, 2) > today else 1) + 4
        assert certificate.not_valid_after_utc == datetime.combine(date(year, 1, 2), time(23, 59, 59), JST).astimezone(UTC)

    # the signing certificate states the four basic items (J-LIS otherNames, UTF8String)
    full_name = f"{person['name']['family_name']} {person['name']['given_name']}"
    assert signing.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == full_name
    items = {n.type_id: n.value for n in signing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert items[OID_NAME] == b"\x0c" + bytes([len(full_name.encode())]) + full_name.encode()
    assert items[OID_BIRTH] == b"\x0c\x09" + b"419900102"
    assert items[OID_SEX] == b"\x0c\x01" + (b"1" if person["sex"] == "male" else b"2")
    assert person["address"]["text"].encode() in items[OID_ADDRESS]
    # the authentication certificate states nothing personal, and neither carries the resident code
    with pytest.raises(x509.ExtensionNotFound):
        authentication.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    for certificate in (signing, authentication):
        assert code.encode() not in certificate.public_bytes(serialization.Encoding.DER)
    assert person["name"]["family_name"].encode() not in authentication.public_bytes(serialization.Encoding.DER)

    rows = db("national").rows("select kind, status, issued_by from jpki_certificates where resident_code = %s order by kind", (code,))
    assert rows == [("authentication", "good", "131016"), ("signing", "good", "131016")]
    # handing over the card is an in-person check
    state = _assurance(network, code)
    assert state["consecutive_online_procedures"] == 0 and state["last_in_person_check_at"] is not None
    assert db("national").value("select recorded_by from assurance_events where resident_code = %s and purpose = 'jpki-issuance' limit 1", (code,)) == "cs-131016"

    # a new card supersedes the old one's certificate of the same kind
    again = _issue(network, code, Card(), signing_public_key_pem=Card.public_pem(ec.generate_private_key(ec.SECP256R1())))
    assert again.status_code == 201, again.text
    assert _status(network, issued["signing"]["serial"]) | {"revoked_at": None} == {"serial": issued["signing"]["serial"], "status": "revoked", "revoked_at": None, "reason": "superseded"}
    assert _status(network, issued["authentication"]["serial"])["status"] == "good"


def test_only_the_cs_of_the_persons_municipality_may_request_issuance(network, db):
    code = _adult(network, db)["resident_code"]
    request = {"resident_code": code, "kind": "authentication", "public_key_pem": Card.public_pem(ec.generate_private_key(ec.SECP256R1()))}
    national = f"{network.url(NATIONAL)}/internal/v1/jpki/certificates"
    before = _refusals(db, "not-registered-here")

    other_cs = httpx.post(national, json=request, headers={"authorization": f"Bearer {_token(network, 'cs-131130', 'national')}"}, timeout=10)
    _problem(other_cs, 403, "not-registered-here")
    assert _refusals(db, "not-registered-here") == before + 1
    assert db("national").value("select caller from refusals where reason = 'not-registered-here' order by id desc limit 1") == "cs-131130"
    # not a CS at all: an RRS, a prefecture server (where the network has them), an agency
    for issuer in ("rrs-131016", *(["pref-13"] if network.topology.network.prefecture_tier else []), "agency-pension-service"):
        _problem(httpx.post(national, json=request, headers={"authorization": f"Bearer {_token(network, issuer, 'national')}"}, timeout=10), 401, "unauthorized")
    # another municipality's CS refuses on its own copy before asking, and its RRS does not know the person
    via_other = httpx.post(f"{network.url('cs_gateway.131130')}/v1/rrs/jpki/certificates", json=request, headers={"authorization": f"Bearer {_token(network, 'rrs-131130', 'cs-131130')}"}, timeout=10)
    _problem(via_other, 403, "not-registered-here")
    _problem(_issue(network, code, Card(), municipality="131130"), 404, "not-found")
    assert db("national").value("select count(*) from jpki_certificates where resident_code = %s", (code,)) == 0

    # the own CS may; the same card key twice may not
    own = httpx.post(national, json=request, headers={"authorization": f"Bearer {_token(network, 'cs-131016', 'national')}"}, timeout=10)
    assert own.status_code == 201, own.text
    _problem(httpx.post(national, json=request, headers={"authorization": f"Bearer {_token(network, 'cs-131016', 'national')}"}, timeout=10), 409, "public-key-reused")


def test_no_signing_certificate_for_a_child_and_no_certificate_for_a_dead_person(network, db):
    child = register(network, "272035")  # a newborn
    _national_at(db, child["resident_code"], 1)
    card = Card()
    _problem(_issue(network, child["resident_code"], card, municipality="272035"), 409, "signing-certificate-under-15")
    only_authentication = _issue(network, child["resident_code"], card, municipality="272035", authentication_public_key_pem=Card.public_pem(card.authentication))
    assert only_authentication.status_code == 201, only_authentication.text

    _problem(_issue(network, child["resident_code"], card, municipality="272035", authentication_public_key_pem="-----BEGIN PUBLIC KEY-----\n" + "A" * 64 + "\n-----END PUBLIC KEY-----\n"), 422, "unsupported-public-key")
    assert httpx.post(f"{_rrs(network, '272035')}/v1/residents/{child['resident_code']}/jpki-certificates", auth=network.staff_auth(), json={}, timeout=10).status_code == 422


# --- signed filings ----------------------------------------------------------------------------


def test_a_signed_filing_resolves_the_serial_and_is_recorded(network, db):
    person = _adult(network, db)
    code = person["resident_code"]
    card = Card()
    issued = _issued(network, code, card)
    payload = f"転出届 {code} 2026-12-01 大阪府豊中市".encode()

    verified = _verify_at_cs(network, _filing(issued["signing"]["certificate_pem"], card.signing, payload))
    assert verified.status_code == 200, verified.text
    answer = verified.json()
    assert answer["resident_code"] == code and answer["serial"] == issued["signing"]["serial"] and answer["kind"] == "signing"
    assert answer["basic_items"] == {
        "name": f"{person['name']['family_name']} {person['name']['given_name']}", "birth_date": "1990-01-02", "sex": person["sex"], "address": person["address"]["text"],
    }
    assert answer["certificate_status"]["status"] == "good" and answer["purpose"] == "online-move-out"
    assert answer["assurance"]["credential_uses"] == 1 and answer["assurance"]["last_credential_use_at"] is not None
    assert db("national").rows("select serial, purpose, requested_by from jpki_resolutions where resident_code = %s", (code,)) == [(issued["signing"]["serial"], "online-move-out", "cs-131016")]

    # the authentication certificate identifies the holder too, without any item
    login = _verify_at_cs(network, _filing(issued["authentication"]["certificate_pem"], card.authentication, b"challenge-42", purpose="portal-login"))
    assert login.status_code == 200 and login.json()["resident_code"] == code and login.json()["basic_items"] is None
    assert login.json()["assurance"]["credential_uses"] == 2

    # a tampered payload, another key's signature, a foreign certificate: refused, recorded, nothing resolved
    resolutions = db("national").value("select count(*) from jpki_resolutions where resident_code = %s", (code,))
    before = _refusals(db, "signature-invalid")
    tampered = _filing(issued["signing"]["certificate_pem"], card.signing, payload.replace(b"2026-12-01", b"2026-12-02"), signed=payload)
    _problem(_verify_at_cs(network, tampered), 422, "signature-invalid")
    _problem(_verify_at_cs(network, _filing(issued["signing"]["certificate_pem"], card.authentication, payload)), 422, "signature-invalid")
    assert _refusals(db, "signature-invalid") == before + 2
    assert db("national").value("select caller from refusals where reason = 'signature-invalid' order by id desc limit 1") == "cs-131016"

    forger = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    fake_ca = x509.CertificateBuilder().subject_name(_ca(network).subject).issuer_name(_ca(network).subject).public_key(forger.public_key()).serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30)).sign(forger, hashes.SHA256())
    fake = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "偽造")])).issuer_name(fake_ca.subject).public_key(card.signing.public_key()).serial_number(int(issued["signing"]["serial"])).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30)).sign(forger, hashes.SHA256())
    before = _refusals(db, "unknown-issuer")
    _problem(_verify_at_cs(network, _filing(fake.public_bytes(serialization.Encoding.PEM).decode(), card.signing, payload)), 422, "unknown-issuer")
    assert _refusals(db, "unknown-issuer") == before + 1
    assert db("national").value("select count(*) from jpki_resolutions where resident_code = %s", (code,)) == resolutions

    # only network nodes may ask to verify (an agency cannot resolve serials)
    direct = httpx.post(f"{network.url(NATIONAL)}/internal/v1/jpki/verify", json=_filing(issued["signing"]["certificate_pem"], card.signing, payload), headers={"authorization": f"Bearer {network.agency_token('pension-service')}"}, timeout=10)
    _problem(direct, 401, "unauthorized")
    _problem(_verify_at_cs(network, {**_filing(issued["signing"]["certificate_pem"], card.signing, payload), "signature": "not base64!"}), 422, "invalid-request")


# --- revocation -------------------------------------------------------------------------------------


def test_a_move_revokes_the_signing_certificate_but_not_the_authentication_certificate(network, db):
    person = _adult(network, db, "131130")
    code = person["resident_code"]
    card = Card()
    issued = _issued_in(network, code, card, "131130")
    ca = _ca(network)
    signing = x509.load_pem_x509_certificate(issued["signing"]["certificate_pem"].encode())
    authentication = x509.load_pem_x509_certificate(issued["authentication"]["certificate_pem"].encode())
    assert _ocsp(network, signing, ca).certificate_status is ocsp.OCSPCertStatus.GOOD
    assert _crl(network, ca).get_revoked_certificate_by_serial_number(signing.serial_number) is None

    moved = httpx.post(f"{_rrs(network, '131130')}/v1/residents/{code}/move-within", auth=network.staff_auth(), json={"new_address": address_in("131130"), "move_date": date.today().isoformat()}, timeout=10)
    assert moved.status_code == 200, moved.text
    wait_until(lambda: _status(network, issued["signing"]["serial"])["status"] == "revoked", what="the signing certificate revoked after the move")
    assert _status(network, issued["signing"]["serial"])["reason"] == "basic_items_changed"
    assert _status(network, issued["authentication"]["serial"])["status"] == "good"

    # the CRL: signed by the CA, lists the signing certificate with its reason, not the authentication one
    crl = _crl(network, ca)
    entry = crl.get_revoked_certificate_by_serial_number(signing.serial_number)
    assert entry is not None and entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.affiliation_changed
    assert crl.get_revoked_certificate_by_serial_number(authentication.serial_number) is None

    # OCSP: a signed answer per certificate, with the nonce echoed
    revoked = _ocsp(network, signing, ca, nonce=b"nonce-revoked-01")
    assert revoked.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and revoked.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert revoked.serial_number == signing.serial_number and revoked.revocation_reason is x509.ReasonFlags.affiliation_changed
    ca.public_key().verify(revoked.signature, revoked.tbs_response_bytes, ec.ECDSA(revoked.signature_hash_algorithm))
    assert revoked.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"nonce-revoked-01"
    good = _ocsp(network, authentication, ca)
    assert good.certificate_status is ocsp.OCSPCertStatus.GOOD
    ca.public_key().verify(good.signature, good.tbs_response_bytes, ec.ECDSA(good.signature_hash_algorithm))
    # about another CA's certificate the responder is not authoritative; garbage is malformed
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])).issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other CA")])).public_key(other_key.public_key()).serial_number(1).not_valid_before(datetime.now(UTC) - timedelta(days=1)).not_valid_after(datetime.now(UTC) + timedelta(days=1)).sign(other_key, hashes.SHA256())
    assert _ocsp(network, other_ca, other_ca).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    garbage = httpx.post(f"{network.url(NATIONAL)}/v1/jpki/ocsp", content=b"\x30\x03\x02\x01\x00", headers={"content-type": "application/ocsp-request"}, timeout=10)
    assert ocsp.load_der_ocsp_response(garbage.content).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST

    # a filing signed with the revoked certificate is refused and recorded; the authentication certificate still works
    before = _refusals(db, "certificate-revoked")
    _problem(_verify_at_cs(network, _filing(issued["signing"]["certificate_pem"], card.signing, b"online move-in", purpose="online-move-in"), "131130"), 422, "certificate-revoked")
    assert _refusals(db, "certificate-revoked") == before + 1
    assert _verify_at_cs(network, _filing(issued["authentication"]["certificate_pem"], card.authentication, b"login"), "131130").status_code == 200

    # the new address on a new signing certificate
    renewed = _issue(network, code, card, municipality="131130", signing_public_key_pem=Card.public_pem(ec.generate_private_key(ec.SECP256R1())))
    assert renewed.status_code == 201, renewed.text
    new_signing = x509.load_pem_x509_certificate(renewed.json()["certificates"][0]["certificate_pem"].encode())
    address = {n.type_id: n.value for n in new_signing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}[OID_ADDRESS]
    assert moved.json()["address"]["text"].encode() in address


def _issued_in(network, code: str, card: Card, municipality: str) -> dict[str, dict]:
    response = _issue(network, code, card, municipality=municipality)
    assert response.status_code == 201, response.text
    return {c["kind"]: c for c in response.json()["certificates"]}


def test_death_revokes_both_certificates(network, db):
    code = _adult(network, db, "272035", born=date(1950, 5, 1))["resident_code"]
    issued = _issued_in(network, code, Card(), "272035")
    died = httpx.post(f"{_rrs(network, '272035')}/v1/residents/{code}/death", auth=network.staff_auth(), json={"death_date": date.today().isoformat()}, timeout=10)
    assert died.status_code == 200, died.text
    for kind in ("signing", "authentication"):
        wait_until(lambda kind=kind: _status(network, issued[kind]["serial"]).get("reason") == "deceased", what=f"the {kind} certificate revoked on death")
    assert _issue(network, code, Card(), municipality="272035").status_code == 409


# --- assurance ledger --------------------------------------------------------------------------------


def test_online_procedures_are_counted_and_an_in_person_check_resets_the_count(network, db):
    code = _adult(network, db, "131130", born=date(1985, 6, 15))["resident_code"]
    state = _assurance(network, code, "131130")
    assert state == {"resident_code": code, "consecutive_online_procedures": 0, "last_in_person_check_at": None, "credential_uses": 0, "last_credential_use_at": None}

    for n in (1, 2, 3):
        counted = _assurance_event(network, code, "online_procedure", "131130")
        assert counted.status_code == 200, counted.text
        assert counted.json()["consecutive_online_procedures"] == n
    assert _assurance(network, code, "131130")["consecutive_online_procedures"] == 3

    checked = httpx.post(f"{_rrs(network, '131130')}/v1/residents/{code}/identity-checks", auth=network.staff_auth(), timeout=10)
    assert checked.status_code == 200, checked.text
    assert checked.json()["consecutive_online_procedures"] == 0 and checked.json()["last_in_person_check_at"] is not None
    assert _assurance_event(network, code, "online_procedure", "131130").json()["consecutive_online_procedures"] == 1
    # issuing a card at the counter is an in-person check too
    _issued_in(network, code, Card(), "131130")
    assert _assurance(network, code, "131130")["consecutive_online_procedures"] == 0
    kinds = db("national").rows("select kind, recorded_by from assurance_events where resident_code = %s order by id", (code,))
    assert [k for k, _ in kinds] == ["online_procedure"] * 3 + ["in_person_check", "online_procedure"] + ["in_person_check"] * 2  # one per certificate issued
    assert {by for _, by in kinds} == {"cs-131130"}

    # an unknown event kind is refused; an unknown person is not found; agencies cannot read the ledger
    _problem(_assurance_event(network, code, "phone_call", "131130"), 422, "invalid-request")
    _problem(httpx.get(f"{network.url(NATIONAL)}/internal/v1/assurance/12345678903", headers={"authorization": f"Bearer {_token(network, 'cs-131130', 'national')}"}, timeout=10), 404, "not-found")
    _problem(httpx.get(f"{network.url(NATIONAL)}/internal/v1/assurance/{code}", headers={"authorization": f"Bearer {network.agency_token('pension-service')}"}, timeout=10), 401, "unauthorized")

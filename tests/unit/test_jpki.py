"""JPKI rules without a network: certificate profile, validity, revocation
decisions, filing checks, CRL and OCSP (services/national_server/jpki.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from contracts.identifiers import new_individual_number, new_resident_code
from contracts.identity import IdentityChange, IdentityInfo, Sex
from contracts.jpki import BasicItems, CertificateKind, RevocationReason
from services.national_server import jpki

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def identity(**changes) -> IdentityInfo:
    base = {
        "resident_code": new_resident_code(), "individual_number": new_individual_number(),
        "name": {"family_name": "山田", "given_name": "花子", "family_name_kana": "ヤマダ", "given_name_kana": "ハナコ"},
        "birth_date": "1990-01-02", "sex": "female",
        "address": {"municipality_code": "131016", "postal_code": "1000001", "text": "東京都千代田区千代田1-1"},
    }
    return IdentityInfo.model_validate({**base, **changes})


def change(info: IdentityInfo, *, status: str = "active", reason: str = "move_within") -> IdentityChange:
    return IdentityChange.model_validate({
        "event_id": str(uuid.uuid4()), "resident_code": info.resident_code, "version": 2, "municipality_code": info.address.municipality_code,
        "reason": reason, "change_date": "2026-11-27", "status": status, "identity": info.model_dump(mode="json"), "recorded_at": NOW.isoformat(),
    })


@pytest.fixture(scope="module")
def ca():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, jpki.build_ca_certificate(key, NOW - timedelta(days=1))


def issue(ca, kind: CertificateKind, info: IdentityInfo, card=None, now: datetime = NOW):
    key, certificate = ca
    card = card or ec.generate_private_key(ec.SECP256R1())
    plan = jpki.plan_certificate(kind, info, now, certificate.not_valid_after_utc)
    return card, plan, jpki.build_certificate(plan, card.public_key(), key, certificate)


# --- items and profile -----------------------------------------------------------------------


@pytest.mark.parametrize("born, expected", [
    (date(1990, 1, 2), "419900102"), (date(1989, 1, 7), "319890107"), (date(1989, 1, 8), "419890108"),
    (date(2019, 4, 30), "420190430"), (date(2019, 5, 1), "520190501"), (date(1926, 12, 25), "319261225"), (date(1912, 7, 29), "119120729"),
])
def test_birth_date_item_carries_the_era_digit(born, expected):
    assert jpki.era_date(born) == expected


def test_name_item_carries_former_surname_and_alias_where_recorded():
    assert jpki.name_item(identity()) == "山田 花子"
    assert jpki.name_item(identity(former_surname="鈴木")) == "山田 花子（旧氏：鈴木）"
    assert jpki.name_item(identity(name={"family_name": "SMITH", "given_name": "JOHN"}, alias="山本")) == "SMITH JOHN（通称：山本）"


def test_signing_certificate_states_the_four_basic_items_and_nothing_else(ca):
    info = identity(address={"municipality_code": "131016", "text": "東京都千代田区千代田1-1" + "丁目" * 90})  # a long UTF-8 item (long DER length)
    _, plan, certificate = issue(ca, CertificateKind.signing, info)
    assert certificate.issuer == jpki.CA_SUBJECT and certificate.serial_number == plan.serial
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "山田 花子"
    assert jpki.read_basic_items(certificate) == BasicItems(name="山田 花子", birth_date=date(1990, 1, 2), sex="female", address=info.address.text)
    others = {n.type_id.dotted_string: n.value for n in certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert others["1.2.392.200149.8.5.5.3"] == b"\x0c\x012"  # UTF8String "2" (female)
    assert others["1.2.392.200149.8.5.5.4"] == b"\x0c\x09419900102"
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and not usage.key_cert_sign
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert info.resident_code.encode() not in der and info.individual_number.encode() not in der


def test_authentication_certificate_carries_no_personal_item(ca):
    info = identity()
    _, plan, certificate = issue(ca, CertificateKind.authentication, info)
    assert jpki.read_basic_items(certificate) is None
    with pytest.raises(x509.ExtensionNotFound):
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"{plan.serial:040X}"
    der = certificate.public_bytes(serialization.Encoding.DER)
    for item in ("山田", "花子", "千代田", info.resident_code, "19900102"):
        assert item.encode() not in der
    assert certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])


def test_serials_are_random_and_positive(ca):
    serials = {issue(ca, CertificateKind.authentication, identity())[1].serial for _ in range(20)}
    assert len(serials) == 20 and all(0 < s < 2**159 for s in serials)


# --- validity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("born, issued, last_day", [
    (date(1990, 1, 2), date(2026, 11, 27), date(2031, 1, 2)),
    (date(1990, 11, 27), date(2026, 11, 27), date(2031, 11, 27)),  # issued on the birthday: that one does not count
    (date(1990, 11, 28), date(2026, 11, 27), date(2030, 11, 28)),
    (date(1992, 2, 29), date(2026, 11, 27), date(2031, 2, 28)),  # a common year's last day of February
])
def test_certificates_are_valid_until_the_fifth_birthday_after_issuance(born, issued, last_day):
    assert jpki.fifth_birthday_after(born, issued) == last_day


def test_validity_ends_at_the_end_of_the_day_in_japan_and_never_after_the_ca():
    not_before, not_after = jpki.validity(date(1990, 1, 2), NOW, NOW + timedelta(days=3650))
    assert not_before == NOW and not_after == datetime(2031, 1, 2, 14, 59, 59, tzinfo=UTC)  # 23:59:59 JST
    assert jpki.validity(date(1990, 1, 2), NOW, NOW + timedelta(days=30))[1] == NOW + timedelta(days=30)


def test_no_signing_certificate_under_fifteen():
    child = identity(birth_date=(NOW.date() - timedelta(days=14 * 365)).isoformat())
    with pytest.raises(jpki.IssuanceRefused) as refused:
        jpki.check_issuable(CertificateKind.signing, child, NOW.date())
    assert refused.value.slug == "signing-certificate-under-15"
    jpki.check_issuable(CertificateKind.authentication, child, NOW.date())
    jpki.check_issuable(CertificateKind.signing, identity(), NOW.date())


def test_card_keys_are_limited_to_signature_keys_every_verifier_supports():
    def as_pem(key):
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    for good in (ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048), Ed25519PrivateKey.generate()):
        jpki.load_card_public_key(as_pem(good))
    for bad in (ec.generate_private_key(ec.SECP256K1()), rsa.generate_private_key(65537, 1024), x25519.X25519PrivateKey.generate()):
        with pytest.raises(jpki.IssuanceRefused):
            jpki.load_card_public_key(as_pem(bad))
    with pytest.raises(jpki.IssuanceRefused):
        jpki.load_card_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


# --- revocation ----------------------------------------------------------------------------------


def test_what_revokes_which_certificate():
    before = identity()
    items = jpki.basic_items(before)
    moved = before.model_copy(update={"address": before.address.model_copy(update={"text": "東京都千代田区丸の内1-1"})})
    renamed = before.model_copy(update={"name": before.name.model_copy(update={"family_name": "佐藤"})})
    kana_only = before.model_copy(update={"name": before.name.model_copy(update={"family_name_kana": "ヤマタ"})})
    older = before.model_copy(update={"former_surname": "鈴木"})
    signing, authentication = CertificateKind.signing, CertificateKind.authentication
    assert jpki.revocation_for(signing, items, change(moved)) is RevocationReason.basic_items_changed
    assert jpki.revocation_for(signing, items, change(renamed, reason="name_change")) is RevocationReason.basic_items_changed
    assert jpki.revocation_for(signing, items, change(older, reason="name_change")) is RevocationReason.basic_items_changed
    assert jpki.revocation_for(signing, items, change(before.model_copy(update={"sex": Sex.male}), reason="correction")) is RevocationReason.basic_items_changed
    assert jpki.revocation_for(signing, items, change(kana_only, reason="correction")) is None  # furigana is not in the certificate
    for after in (moved, renamed, older):
        assert jpki.revocation_for(authentication, None, change(after)) is None
    for kind in (signing, authentication):
        assert jpki.revocation_for(kind, items, change(before, status="deceased", reason="death")) is RevocationReason.deceased
        assert jpki.revocation_for(kind, items, change(before, status="removed", reason="ex_officio_removal")) is RevocationReason.removed
    # in transit (転出予定) the person is still registered at the stated address; the 転入 revokes
    for kind in (signing, authentication):
        assert jpki.revocation_for(kind, items, change(before, status="moving_out", reason="move_out")) is None
    arrived = before.model_copy(update={"address": before.address.model_copy(update={"municipality_code": "272035", "text": "大阪府豊中市中桜塚3-1-1"})})
    assert jpki.revocation_for(signing, items, change(arrived, reason="move_in")) is RevocationReason.basic_items_changed
    assert jpki.revocation_for(authentication, None, change(arrived, reason="move_in")) is None


# --- signed filings ---------------------------------------------------------------------------------


def test_a_filing_is_checked_for_issuer_validity_and_signature(ca):
    card, _, certificate = issue(ca, CertificateKind.signing, identity())
    pem = jpki.pem(certificate)
    payload = "転出届 2026-12-01".encode()
    signature = card.sign(payload, ec.ECDSA(hashes.SHA256()))
    assert jpki.check_filing(pem, payload, signature, ca[1], NOW).serial_number == certificate.serial_number

    def refused(*args) -> str:
        with pytest.raises(jpki.FilingRefused) as exc:
            jpki.check_filing(*args)
        return exc.value.slug

    assert refused(pem, payload + b" ", signature, ca[1], NOW) == "signature-invalid"
    assert refused(pem, payload, card.sign(b"other", ec.ECDSA(hashes.SHA256())), ca[1], NOW) == "signature-invalid"
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = jpki.build_ca_certificate(other_key, NOW - timedelta(days=1))  # same name, another key
    assert refused(pem, payload, signature, other_ca, NOW) == "unknown-issuer"
    assert refused(pem, payload, signature, ca[1], certificate.not_valid_after_utc + timedelta(seconds=1)) == "certificate-expired"
    assert refused(pem, payload, signature, ca[1], certificate.not_valid_before_utc - timedelta(seconds=1)) == "certificate-not-yet-valid"
    assert refused("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", payload, signature, ca[1], NOW) == "certificate-malformed"


def test_rsa_and_ed25519_cards_sign_filings_too(ca):
    payload = b"filing"
    card, _, certificate = issue(ca, CertificateKind.authentication, identity(), card=rsa.generate_private_key(65537, 2048))
    jpki.check_filing(jpki.pem(certificate), payload, card.sign(payload, padding.PKCS1v15(), hashes.SHA256()), ca[1], NOW)
    card, _, certificate = issue(ca, CertificateKind.authentication, identity(), card=Ed25519PrivateKey.generate())
    jpki.check_filing(jpki.pem(certificate), payload, card.sign(payload), ca[1], NOW)


def test_base64_must_be_strict():
    assert jpki.decode_base64("aGk=", "payload") == b"hi"
    with pytest.raises(jpki.FilingRefused):
        jpki.decode_base64("a$Gk=", "payload")


# --- CRL and OCSP -------------------------------------------------------------------------------------


def test_the_crl_is_signed_and_lists_reasons(ca):
    key, certificate = ca
    revoked = [jpki.Revoked(11, NOW, RevocationReason.basic_items_changed), jpki.Revoked(12, NOW, RevocationReason.deceased)]
    crl = x509.load_der_x509_crl(jpki.build_crl(key, certificate, revoked, NOW))
    assert crl.is_signature_valid(certificate.public_key()) and crl.issuer == certificate.subject
    reasons = {r.serial_number: r.extensions.get_extension_for_class(x509.CRLReason).value.reason for r in crl}
    assert reasons == {11: x509.ReasonFlags.affiliation_changed, 12: x509.ReasonFlags.cessation_of_operation}
    assert crl.next_update_utc == NOW + jpki.CRL_NEXT_UPDATE


def test_ocsp_answers_good_revoked_and_unknown_signed_with_the_nonce(ca):
    key, certificate = ca
    _, _, holder = issue(ca, CertificateKind.signing, identity())
    request = ocsp.OCSPRequestBuilder().add_certificate(holder, certificate, hashes.SHA1()).add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False).build()
    parsed = jpki.ocsp_request(request.public_bytes(serialization.Encoding.DER))
    assert parsed is not None and jpki.asks_about_this_ca(parsed, certificate)
    for revoked, known, expected in [
        (None, True, ocsp.OCSPCertStatus.GOOD),
        (jpki.Revoked(holder.serial_number, NOW, RevocationReason.basic_items_changed), True, ocsp.OCSPCertStatus.REVOKED),
        (None, False, ocsp.OCSPCertStatus.UNKNOWN),
    ]:
        answer = ocsp.load_der_ocsp_response(jpki.build_ocsp_response(parsed, key, certificate, revoked, known, NOW))
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL and answer.certificate_status is expected
        assert answer.serial_number == holder.serial_number
        certificate.public_key().verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm))
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
        if revoked is not None:
            assert answer.revocation_reason is x509.ReasonFlags.affiliation_changed and answer.revocation_time_utc == NOW
    other = jpki.build_ca_certificate(ec.generate_private_key(ec.SECP256R1()), NOW)
    assert not jpki.asks_about_this_ca(parsed, other)
    assert jpki.ocsp_request(b"not an OCSP request") is None

"""JPKI rules, pure (no I/O): what a certificate carries, how long it is valid,
when it is revoked, and the checks a signed filing must pass.

The national server is the certification authority (as J-LIS is). The profile
follows J-LIS's: the four basic items of the signing certificate are
subjectAltName otherNames under J-LIS's arc ``1.2.392.200149.8.5.5``, each a
UTF8String; the authentication certificate carries no personal item at all.
Neither carries the resident code or the individual number: the serial number
is the only link, and only the CA can resolve it (R-ONL-5, R-OWN-2).
See docs/jpki.md.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from contracts.identity import IdentityChange, IdentityInfo, RegistrationStatus, Sex
from contracts.jpki import BasicItems, CertificateKind, RevocationReason

JST = timezone(timedelta(hours=9))

# J-LIS personal-data arc (jpki-pd-*): the items of the 署名用電子証明書.
OID_NAME = ObjectIdentifier("1.2.392.200149.8.5.5.1")  # 氏名
OID_SEX = ObjectIdentifier("1.2.392.200149.8.5.5.3")  # 性別: "1" male, "2" female
OID_BIRTH_DATE = ObjectIdentifier("1.2.392.200149.8.5.5.4")  # 生年月日: era digit + YYYYMMDD
OID_ADDRESS = ObjectIdentifier("1.2.392.200149.8.5.5.5")  # 住所

SEX_CODE = {Sex.male: "1", Sex.female: "2"}
#: Era digits of the birth date item, as in J-LIS's profile: 明治 1, 大正 2, 昭和 3, 平成 4, 令和 5.
ERAS = ((date(2019, 5, 1), "5"), (date(1989, 1, 8), "4"), (date(1926, 12, 25), "3"), (date(1912, 7, 30), "2"), (date(1868, 10, 23), "1"))

CA_SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Japan Agency for Local Authority Information Systems"),
    x509.NameAttribute(NameOID.COMMON_NAME, "jukinet JPKI CA"),
])
CA_VALIDITY = timedelta(days=20 * 365)
CERTIFICATE_BIRTHDAYS = 5  # valid until the holder's 5th birthday after issuance, as J-LIS
SIGNING_MINIMUM_AGE = 15  # J-LIS issues no signing certificate under 15
CRL_NEXT_UPDATE = timedelta(hours=24)
OCSP_NEXT_UPDATE = timedelta(hours=1)

CaKey = ec.EllipticCurvePrivateKey | Ed25519PrivateKey

_CRL_REASON = {
    RevocationReason.basic_items_changed: x509.ReasonFlags.affiliation_changed,  # RFC 5280: the subject's information changed
    RevocationReason.deceased: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.removed: x509.ReasonFlags.cessation_of_operation,
    RevocationReason.superseded: x509.ReasonFlags.superseded,
}


def crl_reason(reason: RevocationReason) -> x509.ReasonFlags:
    return _CRL_REASON[reason]


# --- the four basic items ----------------------------------------------------------


def name_item(identity: IdentityInfo) -> str:
    """氏名 as the certificate states it: family and given name, with 旧氏 and 通称 where recorded."""
    name = " ".join(p for p in (identity.name.family_name, identity.name.given_name) if p)
    if identity.former_surname:
        name += f"（旧氏：{identity.former_surname}）"
    if identity.alias:
        name += f"（通称：{identity.alias}）"
    return name


def basic_items(identity: IdentityInfo) -> BasicItems:
    return BasicItems(name=name_item(identity), birth_date=identity.birth_date, sex=identity.sex, address=identity.address.text)


def era_date(birth: date) -> str:
    """生年月日 item: the era digit, then the Gregorian date (e.g. 1990-01-02 → ``419900102``)."""
    for start, digit in ERAS:
        if birth >= start:
            return digit + birth.strftime("%Y%m%d")
    return "0" + birth.strftime("%Y%m%d")  # before 明治: no era digit


def _der_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    n = len(raw)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x0c" + length + raw


def _read_der_utf8(value: bytes) -> str:
    if len(value) < 2 or value[0] != 0x0C:
        raise ValueError("not a UTF8String")
    if value[1] < 0x80:
        start, n = 2, value[1]
    else:
        size = value[1] & 0x7F
        start, n = 2 + size, int.from_bytes(value[2:2 + size], "big")
    if start + n != len(value):
        raise ValueError("bad UTF8String length")
    return value[start:].decode("utf-8")


def item_names(items: BasicItems) -> list[x509.GeneralName]:
    """The subjectAltName otherNames of the signing certificate."""
    return [
        x509.OtherName(OID_NAME, _der_utf8(items.name)),
        x509.OtherName(OID_SEX, _der_utf8(SEX_CODE[items.sex])),
        x509.OtherName(OID_BIRTH_DATE, _der_utf8(era_date(items.birth_date))),
        x509.OtherName(OID_ADDRESS, _der_utf8(items.address)),
    ]


def read_basic_items(certificate: x509.Certificate) -> BasicItems | None:
    """The four basic items a certificate states (None on a certificate that carries none)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = {n.type_id: _read_der_utf8(n.value) for n in san.get_values_for_type(x509.OtherName)}
    if not {OID_NAME, OID_SEX, OID_BIRTH_DATE, OID_ADDRESS} <= found.keys():
        return None
    sex = {code: sex for sex, code in SEX_CODE.items()}[found[OID_SEX]]
    born = found[OID_BIRTH_DATE]
    return BasicItems(name=found[OID_NAME], sex=sex, birth_date=date(int(born[1:5]), int(born[5:7]), int(born[7:9])), address=found[OID_ADDRESS])


# --- validity ----------------------------------------------------------------------------


def _birthday_in(birth: date, year: int) -> date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February in a common year
        return date(year, 2, 28)


def fifth_birthday_after(birth: date, issued_on: date) -> date:
    """The holder's 5th birthday after the day of issuance (J-LIS: 発行日後5回目の誕生日まで)."""
    year = issued_on.year if _birthday_in(birth, issued_on.year) > issued_on else issued_on.year + 1
    return _birthday_in(birth, year + CERTIFICATE_BIRTHDAYS - 1)


def validity(birth: date, now: datetime, ca_not_after: datetime) -> tuple[datetime, datetime]:
    """(not_before, not_after): from now to the end of the 5th birthday (JST), never beyond the CA's own validity."""
    not_before = now.astimezone(UTC).replace(microsecond=0)
    last_day = fifth_birthday_after(birth, now.astimezone(JST).date())
    not_after = datetime.combine(last_day, time(23, 59, 59), JST).astimezone(UTC)
    return not_before, min(not_after, ca_not_after.astimezone(UTC))


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


class IssuanceRefused(ValueError):
    def __init__(self, slug: str, detail: str):
        super().__init__(detail)
        self.slug = slug


def check_issuable(kind: CertificateKind, identity: IdentityInfo, today: date) -> None:
    if kind is CertificateKind.signing and age_on(identity.birth_date, today) < SIGNING_MINIMUM_AGE:
        raise IssuanceRefused("signing-certificate-under-15", f"no signing certificate before the age of {SIGNING_MINIMUM_AGE}")


# --- keys and certificates -------------------------------------------------------------------


def load_card_public_key(pem: str):
    """The card's public key; only key types a card and every verifier support."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise IssuanceRefused("unsupported-public-key", f"not a public key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, (ec.SECP256R1, ec.SECP384R1)):
        return key
    if isinstance(key, rsa.RSAPublicKey) and 2048 <= key.key_size <= 4096:
        return key
    if isinstance(key, Ed25519PublicKey):
        return key
    raise IssuanceRefused("unsupported-public-key", "accepted: ECDSA P-256 or P-384, RSA 2048–4096, Ed25519")


def public_key_fingerprint(key) -> str:
    """SHA-256 of the SubjectPublicKeyInfo: one key, one certificate."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    return digest.finalize().hex()


def _hash_for(key: CaKey):
    return None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()


def build_ca_certificate(key: CaKey, now: datetime) -> x509.Certificate:
    """The self-signed CA certificate (made once per CA key, then kept)."""
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(CA_SUBJECT).issuer_name(CA_SUBJECT).public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now.astimezone(UTC).replace(microsecond=0)).not_valid_after(now.astimezone(UTC).replace(microsecond=0) + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, _hash_for(key))
    )


@dataclass(frozen=True)
class CertificatePlan:
    kind: CertificateKind
    serial: int
    not_before: datetime
    not_after: datetime
    items: BasicItems | None  # only on a signing certificate


def plan_certificate(kind: CertificateKind, identity: IdentityInfo, now: datetime, ca_not_after: datetime) -> CertificatePlan:
    not_before, not_after = validity(identity.birth_date, now, ca_not_after)
    items = basic_items(identity) if kind is CertificateKind.signing else None
    return CertificatePlan(kind=kind, serial=x509.random_serial_number(), not_before=not_before, not_after=not_after, items=items)


def build_certificate(plan: CertificatePlan, public_key, ca_key: CaKey, ca_certificate: x509.Certificate) -> x509.Certificate:
    """A holder's certificate. The subject of the signing certificate is the name; of the
    authentication certificate, an opaque identifier derived from the serial."""
    if plan.items is not None:
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.COMMON_NAME, plan.items.name)])
    else:
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"), x509.NameAttribute(NameOID.COMMON_NAME, f"{plan.serial:040X}")])
    signing = plan.kind is CertificateKind.signing
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca_certificate.subject).public_key(public_key).serial_number(plan.serial)
        .not_valid_before(plan.not_before).not_valid_after(plan.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=signing, key_encipherment=False, data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if plan.items is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(item_names(plan.items)), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(ca_key, _hash_for(ca_key))


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --- automatic revocation ------------------------------------------------------------------


def revocation_for(kind: CertificateKind, items_in_certificate: BasicItems | None, change: IdentityChange) -> RevocationReason | None:
    """Why an applied change revokes a good certificate, or None if it stays good.

    Death and removal end both certificates. The signing certificate also ends
    when the items it states are no longer true: on a move, when the new
    address is recorded (転入, 転居) — during a 転出 in transit the person is
    still registered at the address it states and signs the 転入届 with it.
    The authentication certificate carries no item, so it survives moves and
    changes (J-LIS's 継続利用).
    """
    if change.status is RegistrationStatus.deceased:
        return RevocationReason.deceased
    if change.status is RegistrationStatus.removed:
        return RevocationReason.removed
    if kind is CertificateKind.authentication:
        return None
    if items_in_certificate != basic_items(change.identity):
        return RevocationReason.basic_items_changed
    return None


# --- signed filings ------------------------------------------------------------------------


class FilingRefused(ValueError):
    def __init__(self, status: int, slug: str, title: str, detail: str):
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FilingRefused(422, "invalid-base64", "The filing is not well formed", f"{what} is not base64") from None


def verify_signature(public_key, payload: bytes, signature: bytes) -> None:
    """ECDSA/SHA-256 (DER), RSASSA-PKCS1-v1_5/SHA-256 or Ed25519; raises InvalidSignature."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(public_key, Ed25519PublicKey):
        public_key.verify(signature, payload)
    else:
        raise InvalidSignature("unsupported key type")


def check_filing(certificate_pem: str, payload: bytes, signature: bytes, ca_certificate: x509.Certificate, now: datetime) -> x509.Certificate:
    """The checks that need no register: the certificate is ours, in its validity, and signed the payload."""
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem.encode("ascii"))
    except ValueError as exc:
        raise FilingRefused(422, "certificate-malformed", "The certificate cannot be read", str(exc)) from None
    try:
        certificate.verify_directly_issued_by(ca_certificate)
    except (ValueError, TypeError, InvalidSignature):
        raise FilingRefused(422, "unknown-issuer", "The certificate was not issued by this authority", f"issuer {certificate.issuer.rfc4514_string()}") from None
    if now < certificate.not_valid_before_utc:
        raise FilingRefused(422, "certificate-not-yet-valid", "The certificate is not valid yet", f"valid from {certificate.not_valid_before_utc.isoformat()}")
    if now > certificate.not_valid_after_utc:
        raise FilingRefused(422, "certificate-expired", "The certificate has expired", f"valid until {certificate.not_valid_after_utc.isoformat()}")
    try:
        verify_signature(certificate.public_key(), payload, signature)
    except InvalidSignature:
        raise FilingRefused(422, "signature-invalid", "The signature does not match the payload", "the payload was not signed with this certificate's key, or it was altered") from None
    return certificate


# --- CRL and OCSP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: RevocationReason


def build_crl(ca_key: CaKey, ca_certificate: x509.Certificate, revoked: list[Revoked], now: datetime) -> bytes:
    """A signed CRL (DER) of every revoked certificate still within its validity."""
    now = now.astimezone(UTC).replace(microsecond=0)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject).last_update(now).next_update(now + CRL_NEXT_UPDATE)
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for r in revoked:
        entry = (
            x509.RevokedCertificateBuilder().serial_number(r.serial).revocation_date(r.revoked_at.astimezone(UTC).replace(microsecond=0))
            .add_extension(x509.CRLReason(crl_reason(r.reason)), critical=False).build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.DER)


def ocsp_request(der: bytes) -> ocsp.OCSPRequest | None:
    try:
        return ocsp.load_der_ocsp_request(der)
    except (ValueError, NotImplementedError):
        return None


def asks_about_this_ca(request: ocsp.OCSPRequest, ca_certificate: x509.Certificate) -> bool:
    """The request's issuer hashes are those of this CA, under the request's own hash algorithm
    (computed by building the same CertID for the self-signed CA certificate)."""
    mine = ocsp.OCSPRequestBuilder().add_certificate(ca_certificate, ca_certificate, request.hash_algorithm).build()
    return request.issuer_name_hash == mine.issuer_name_hash and request.issuer_key_hash == mine.issuer_key_hash


def ocsp_unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def build_ocsp_response(request: ocsp.OCSPRequest, ca_key: CaKey, ca_certificate: x509.Certificate, revoked: Revoked | None, known: bool, now: datetime) -> bytes:
    """A signed OCSP response about one serial: good, revoked (time, reason) or unknown; the nonce is echoed."""
    now = now.astimezone(UTC).replace(microsecond=0)
    if not known:
        status = ocsp.OCSPCertStatus.UNKNOWN
    elif revoked is not None:
        status = ocsp.OCSPCertStatus.REVOKED
    else:
        status = ocsp.OCSPCertStatus.GOOD
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash, serial_number=request.serial_number,
        algorithm=request.hash_algorithm, cert_status=status, this_update=now, next_update=now + OCSP_NEXT_UPDATE,
        revocation_time=revoked.revoked_at.astimezone(UTC).replace(microsecond=0) if revoked else None,
        revocation_reason=crl_reason(revoked.reason) if revoked else None,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, ca_certificate)
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value
        builder = builder.add_extension(nonce, critical=False)
    except x509.ExtensionNotFound:
        pass
    return builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.DER)

"""The pure parts of Idempotency-Key handling: the key, the request's fingerprint, what an answer keeps, who calls."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from services.common.idempotency import (
    InvalidKey, first_caller, fingerprint, parse_key, retry_after, stored_headers, token_caller,
)
from services.common.tokens import PublicKeyRing, generate_key_pair, load_private_key, sign_token


@pytest.mark.parametrize("raw, key", [
    (b"a", "a"),
    (b"8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
    (b'"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),  # the draft's sf-string
    (b'"a \\"b\\" \\\\c"', 'a "b" \\c'),
    (b"x" * 255, "x" * 255),
    (b" spaced key ", "spaced key"),
    (b"~!#$%&'()*+,-./:;<=>?@[]^_`{|}", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"),
])
def test_keys_of_printable_ascii_up_to_255_characters_are_taken(raw, key):
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", [b"", b"   ", b'""', b"x" * 256, b'"' + b"x" * 256 + b'"', b"tab\there", b"nul\x00", b"\x7f",
                                 "ключ".encode(), "鍵".encode(), b'"a\\b"', b'"a"b"', b'"a\\"'])
def test_other_keys_are_refused(raw):
    with pytest.raises(InvalidKey):
        parse_key(raw)


def test_the_fingerprint_compares_json_by_value_and_sees_the_query():
    assert fingerprint(b'{"a": 1, "b": [1, 2]}') == fingerprint(b'{"b":[1,2],"a":1}')
    assert fingerprint('{"name": "山田"}'.encode()) == fingerprint(b'{"name": "\\u5c71\\u7530"}')
    assert fingerprint(b'{"a": 1}') != fingerprint(b'{"a": 2}')
    assert fingerprint(b'{"b":[1,2]}') != fingerprint(b'{"b":[2,1]}')
    assert fingerprint(b"not json") == fingerprint(b"not json") != fingerprint(b"not json ")
    assert fingerprint(b"", b"from_id=1&to_id=2") != fingerprint(b"", b"from_id=1&to_id=3")
    assert fingerprint(b"ab", b"") != fingerprint(b"b", b"a")  # the query's length is part of it
    assert len(fingerprint(b"")) == 64


def test_an_answer_keeps_its_own_headers_and_not_the_connections():
    kept = stored_headers([(b"content-type", b"application/json"), (b"location", b"/v1/follows/1"), (b"x-provision-records", b"1,2"),
                           (b"content-length", b"12"), (b"date", b"Mon"), (b"server", b"uvicorn"), (b"set-cookie", b"s=1"), (b"Connection", b"close")])
    assert kept == [("content-type", "application/json"), ("location", "/v1/follows/1"), ("x-provision-records", "1,2")]


def test_retry_after_is_between_one_and_five_seconds():
    assert [retry_after(s) for s in (0.0, 0.2, 1.0, 2.5, 5.0, 119.0)] == [1, 1, 1, 3, 5, 5]


def _request(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})


def test_the_caller_is_the_verified_tokens_issuer_and_subject(tmp_path):
    private, public = tmp_path / "private", tmp_path / "public"
    for party in ("agency-a", "rrs-131016"):
        generate_key_pair(private, public, party)
    keys = PublicKeyRing(public)
    caller = token_caller(keys, audience="national")
    agency_key = load_private_key(private / "agency-a.key")

    def of(headers):
        return asyncio.run(caller(_request(headers)))

    assert of({"authorization": f"Bearer {sign_token(agency_key, issuer='agency-a', audience='national')}"}) == "agency-a"
    assert of({"authorization": f"Bearer {sign_token(agency_key, issuer='agency-a', audience='national', subject='clerk-7')}"}) == "agency-a/clerk-7"
    assert of({"authorization": f"Bearer {sign_token(agency_key, issuer='agency-a', audience='pref-13')}"}) is None  # not for this node
    assert of({"authorization": f"Bearer {sign_token(agency_key, issuer='agency-a', audience='national', lifetime_seconds=-10)}"}) is None
    assert of({"authorization": "Bearer not-a-token"}) is None
    assert of({}) is None
    # a token signed by a key that is not the issuer's names nobody
    forged = sign_token(load_private_key(private / "rrs-131016.key"), issuer="agency-a", audience="national")
    assert of({"authorization": f"Bearer {forged}"}) is None

    async def staff(request):
        return request.headers.get("x-staff-id")

    both = first_caller(caller, staff)
    assert asyncio.run(both(_request({"x-staff-id": "clerk-1"}))) == "clerk-1"
    token = sign_token(agency_key, issuer="agency-a", audience="national", subject="s")
    assert asyncio.run(both(_request({"x-staff-id": "clerk-1", "authorization": f"Bearer {token}"}))) == "agency-a/s"

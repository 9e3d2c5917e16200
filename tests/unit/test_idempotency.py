"""The pure parts of Idempotency-Key handling: the key, the request's fingerprint, what an answer keeps, who calls."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.requests import Request as StarletteRequest

from services.common.idempotency import (
    Attempt, IdempotencyMiddleware, InvalidKey, Outcome, first_caller, fingerprint, parse_key, retry_after, stored_headers, token_caller,
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


def test_retry_after_grows_with_how_long_the_first_attempt_ran_from_one_to_five_seconds():
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
    assert of({"authorization": f"Bearer {sign_token(agency_key, issuer='agency-a', audience='national', lifetime_seconds=-120)}"}) is None
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


class _MemoryStore:
    """The store's contract in memory: the middleware's own logic without a database."""

    def __init__(self):
        self.rows: dict[tuple, dict] = {}
        self.claims: list[tuple] = []

    async def claim(self, *, caller, method, path, key, fingerprint, engine):
        scope = (caller, method, path, key)
        self.claims.append((*scope, fingerprint))
        row = self.rows.get(scope)
        if row is None:
            self.rows[scope] = {"fingerprint": fingerprint, "state": "running"}
            return Outcome("owned", Attempt(len(self.rows), scope, engine))
        if row["fingerprint"] != fingerprint:
            return Outcome("reused")
        if row["state"] == "done":
            return Outcome("replay", status=row["status"], headers=row["headers"], body=row["body"])
        return Outcome("in-use", retry_after=2)

    async def finish(self, attempt, *, status, headers, body):
        if status >= 500:
            del self.rows[attempt.attempt]
        else:
            self.rows[attempt.attempt].update(state="done", status=status, headers=headers, body=body)

    async def abandon(self, attempt):
        self.rows.pop(attempt.attempt, None)


def _app_under_middleware(store, caller="clerk-1"):
    app = FastAPI()
    seen: list[bytes] = []

    @app.post("/things")
    async def things(request: StarletteRequest):
        body = await request.body()
        seen.append(body)
        return JSONResponse({"n": len(seen), "size": len(body)}, status_code=201, headers={"location": f"/things/{len(seen)}", "set-cookie": "s=1"})

    @app.post("/things/secret")
    async def secret():
        seen.append(b"secret")
        return {"token": "t"}

    async def who(request):
        return caller

    wrapped = IdempotencyMiddleware(app, store=store, caller=who, engine=None, not_kept=[r"/things/secret"])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://test"), seen


def test_the_middleware_runs_once_replays_the_answer_and_hands_a_large_body_over_whole():
    async def run():
        store = _MemoryStore()
        client, seen = _app_under_middleware(store)
        async with client:
            big = b"x" * (3 << 20) + b"end"  # spooled to disk, fingerprinted byte for byte
            first = await client.post("/things", content=big, headers={"idempotency-key": "k"})
            again = await client.post("/things", content=big, headers={"idempotency-key": "k"})
            other = await client.post("/things", content=big[:-1], headers={"idempotency-key": "k"})
            busy_store_key = await client.post("/things", json={"a": 1}, headers={"idempotency-key": "k2"})
            bad = await client.post("/things", json={}, headers={"idempotency-key": "x" * 256})
            plain = await client.post("/things", json={})
        return store, seen, first, again, other, busy_store_key, bad, plain

    store, seen, first, again, other, second_key, bad, plain = asyncio.run(run())
    assert seen[0] == b"x" * (3 << 20) + b"end"
    assert first.status_code == again.status_code == 201 and again.content == first.content
    assert again.headers["location"] == first.headers["location"] == "/things/1" and again.headers["idempotency-replayed"] == "true"
    assert "set-cookie" in first.headers and "set-cookie" not in again.headers
    assert other.status_code == 409 and other.json()["type"].endswith("/idempotency-key-reused")
    assert second_key.status_code == 201 and second_key.json()["n"] == 2
    assert bad.status_code == 400 and bad.json()["type"].endswith("/invalid-idempotency-key")
    assert plain.status_code == 201 and len(seen) == 3  # no key: not looked at
    assert store.claims[0][4] == fingerprint(b"x" * (3 << 20) + b"end")


def test_no_caller_or_a_path_not_kept_runs_without_the_key():
    async def run():
        store = _MemoryStore()
        client, seen = _app_under_middleware(store, caller=None)
        async with client:
            for _ in range(2):
                assert (await client.post("/things", json={}, headers={"idempotency-key": "k"})).status_code == 201
        return store, seen

    store, seen = asyncio.run(run())
    assert len(seen) == 2 and store.claims == []

    async def secret():
        store = _MemoryStore()
        client, seen = _app_under_middleware(store)
        async with client:
            for _ in range(2):
                answer = await client.post("/things/secret", json={}, headers={"idempotency-key": "k"})
                assert answer.status_code == 200 and "idempotency-replayed" not in answer.headers
        return store, seen

    store, seen = asyncio.run(secret())
    assert seen == [b"secret", b"secret"] and store.claims == []

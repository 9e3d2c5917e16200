"""Idempotency-Key on the register's and the national server's POSTs (issue 18): a retry gets the first
answer and changes nothing again; another body, another caller, a retry while the first runs, a 5xx,
a node that stopped between the change and keeping the answer."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from datetime import date

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from services.common.db import make_engine, make_sessionmaker
from services.common.idempotency import IdempotencyMiddleware, IdempotencyStore, fingerprint, watch_commits
from services.municipal_rrs.models import IdempotencyKey
from tests.conftest import wait_until
from tests.e2e.helpers import address_in, birth_body, register, unique_reason

CHIYODA, SHIBUYA = "131016", "131130"


def rrs(network) -> str:
    return network.url(f"municipal_rrs.{CHIYODA}")


def staff(network, username: str | None = None) -> dict[str, str]:
    """A clerk's bearer token at 千代田区's register (another clerk for another ``username``)."""
    return network.staff_headers(CHIYODA, "clerk", username=username)


def register_with_key(network, body: dict, key: str, *, clerk: str | None = None) -> httpx.Response:
    return httpx.post(f"{rrs(network)}/v1/residents", json=body, headers={"idempotency-key": key, **staff(network, clerk)}, timeout=20)


def persons_like(db, body: dict) -> int:
    name = body["name"]
    return db(f"rrs_{CHIYODA}").value(
        "select count(*) from residents where family_name = %s and given_name = %s and birth_date = %s::date",
        (name["family_name"], name["given_name"], body["birth_date"]),
    )


def persons_code(db, body: dict) -> str:
    name = body["name"]
    return db(f"rrs_{CHIYODA}").value("select resident_code from residents where family_name = %s and given_name = %s and birth_date = %s::date",
                                      (name["family_name"], name["given_name"], body["birth_date"]))


def slug(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[-1]


def test_a_retry_with_the_same_key_gets_the_first_answer_and_registers_once(network, db):
    body, key = birth_body(CHIYODA), str(uuid.uuid4())
    first = register_with_key(network, body, key)
    assert first.status_code == 201, first.text
    again = register_with_key(network, body, key)
    assert again.status_code == 201
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotency-replayed"] == "true" and "idempotency-replayed" not in first.headers
    assert persons_like(db, body) == 1
    # the same JSON written otherwise is the same request
    reordered = httpx.post(f"{rrs(network)}/v1/residents", content=httpx.Request("POST", "/", json=dict(reversed(list(body.items())))).content,
                           headers={"idempotency-key": key, **staff(network), "content-type": "application/json"}, timeout=20)
    assert reordered.status_code == 201 and reordered.content == first.content
    assert persons_like(db, body) == 1


def test_the_same_key_with_another_body_is_refused(network, db):
    body, key = birth_body(CHIYODA), str(uuid.uuid4())
    assert register_with_key(network, body, key).status_code == 201
    other = birth_body(CHIYODA)
    refused = register_with_key(network, other, key)
    assert refused.status_code == 409 and slug(refused) == "idempotency-key-reused"
    assert persons_like(db, other) == 0 and persons_like(db, body) == 1
    # the key is one route's: the same key on another route is another key
    code = persons_code(db, body)
    moved = httpx.post(f"{rrs(network)}/v1/residents/{code}/move-within", headers={"idempotency-key": key, **staff(network)}, timeout=20,
                       json={"new_address": address_in(CHIYODA), "move_date": body["notified_date"]})
    assert moved.status_code == 200 and moved.json()["resident_code"] == code, moved.text
    # a route whose answer is a credential keeps no answer: the key is not looked at there
    for _ in range(2):
        credential = httpx.post(f"{rrs(network)}/v1/residents/{code}/portal-credential", headers={"idempotency-key": key, **staff(network)}, timeout=20,
                                json={"identity_check": {"method": "mynumber_card", "document_number_last4": "1234"}})
        assert credential.status_code == 200 and "idempotency-replayed" not in credential.headers
    assert db(f"rrs_{CHIYODA}").value("select count(*) from idempotency_keys where path like %s", ("%portal-credential",)) == 0


def test_another_caller_with_the_same_key_gets_its_own_answer(network, db):
    body, key = birth_body(CHIYODA), str(uuid.uuid4())
    first = register_with_key(network, body, key, clerk="clerk-1")
    second = register_with_key(network, body, key, clerk="clerk-2")
    assert first.status_code == second.status_code == 201
    assert "idempotency-replayed" not in second.headers
    assert second.json()["resident_code"] != first.json()["resident_code"]
    assert persons_like(db, body) == 2


def test_concurrent_retries_change_once(network, db):
    body, key = birth_body(CHIYODA), str(uuid.uuid4())
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def send():
        start.wait()
        answers.append(register_with_key(network, body, key))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    created = [a for a in answers if a.status_code == 201]
    busy = [a for a in answers if a.status_code == 409]
    assert len(created) + len(busy) == 8, [a.text for a in answers]
    assert created and len({a.content for a in created}) == 1
    for a in busy:
        assert slug(a) == "idempotency-key-in-use" and 1 <= int(a.headers["retry-after"]) <= 5
    assert persons_like(db, body) == 1
    assert register_with_key(network, body, key).content == created[0].content


def test_invalid_keys_are_refused(network, db):
    body = birth_body(CHIYODA)
    for key in ["", "x" * 256, "a\tb"]:
        refused = httpx.post(f"{rrs(network)}/v1/residents", json=body, headers={"idempotency-key": key}, timeout=10)
        assert refused.status_code == 400 and slug(refused) == "invalid-idempotency-key", (key, refused.text)
    refused = httpx.post(f"{rrs(network)}/v1/residents", json=body, headers=[("idempotency-key", "ключ".encode())], timeout=10)
    assert refused.status_code == 400 and slug(refused) == "invalid-idempotency-key"
    assert persons_like(db, body) == 0
    ok = register_with_key(network, body, '"' + "k" * 255 + '"')  # the draft's structured-field string: the quotes are not part of the key
    assert ok.status_code == 201, ok.text


def national_query(network, body: dict, key: str, agency: str = "pension-service") -> httpx.Response:
    return httpx.post(f"{network.url('national_server.national')}/v1/persons/query", json=body, timeout=20,
                      headers={"authorization": f"Bearer {network.agency_token(agency, audience='national')}", "idempotency-key": key})


def test_an_agency_query_retried_is_provided_and_recorded_once(network, db):
    person = register(network, CHIYODA)
    code = person["resident_code"]
    reason = unique_reason()
    body = {"type": "ByResidentCode", "affair": "pension-benefits", "resident_code": code, "reason": reason}

    wait_until(lambda: db("national").value("select count(*) from identity where resident_code = %s", (code,)) == 1, what=f"{code} at the national server")
    key = str(uuid.uuid4())
    first = national_query(network, body, key)
    assert first.status_code == 200, first.text
    again = national_query(network, body, key)  # a new token of the same agency: the same caller
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["x-provision-records"] == first.headers["x-provision-records"]
    recorded = db("national").value("select count(*) from outbox where kind = 'provision-record' and payload like %s", (f"%{reason[2:]}%",))
    assert recorded == 1
    # another agency with the same key is not given the pension service's answer
    other = national_query(network, {**body, "affair": "passport-issuance"}, key, agency="mofa-passport")
    assert "idempotency-replayed" not in other.headers and other.content != first.content


def test_a_bulk_job_submitted_twice_is_one_job(network, db):
    reason = unique_reason()
    body = "".join(json.dumps({"type": "ByResidentCode", "resident_code": "1" * 11}) + "\n" for _ in range(3)).encode()
    key = str(uuid.uuid4())

    def submit():
        return httpx.post(f"{network.url('national_server.national')}/v1/bulk-jobs", params={"affair": "pension-benefits", "reason": reason}, content=body,
                          headers={"authorization": f"Bearer {network.agency_token('pension-service', audience='national')}", "idempotency-key": key,
                                   "content-type": "application/x-ndjson"}, timeout=60)

    first, again = submit(), submit()
    assert first.status_code == again.status_code == 202, first.text
    assert again.json()["job_id"] == first.json()["job_id"]
    assert db("national").value("select count(*) from bulk_jobs where reason = %s", (reason,)) == 1


def test_a_move_in_retried_after_a_lost_answer_is_filed_once(network, db):
    """The case of issue 18: the 転入届 was carried out, the answer was lost; the retry must not file it again (it would be
    flagged for review as a 転入 without 転出証明書, the reservation being used)."""
    person = register(network, CHIYODA)
    code = person["resident_code"]
    today = date.today().isoformat()
    out = httpx.post(f"{rrs(network)}/v1/move-outs", json={"resident_codes": [code], "planned_date": today, "notified_date": today,
                                                          "destination": address_in(SHIBUYA)}, auth=network.staff_auth(), timeout=20)
    assert out.status_code == 201, out.text
    shibuya = network.url(f"municipal_rrs.{SHIBUYA}")
    wait_until(lambda: code in {c["resident_code"] for c in httpx.get(f"{shibuya}/v1/move-reservations", auth=network.staff_auth(), timeout=10).json()},
               what=f"転入予約 of {code} at {SHIBUYA}")
    filing = {"persons": [{"resident_code": code}], "new_address": address_in(SHIBUYA), "move_date": today, "notified_date": today}
    key = str(uuid.uuid4())
    clerk = network.staff_headers(SHIBUYA)  # the same clerk retries: the key is theirs
    first = httpx.post(f"{shibuya}/v1/move-ins", json=filing, headers={"idempotency-key": key, **clerk}, timeout=20)
    assert first.status_code == 201, first.text
    again = httpx.post(f"{shibuya}/v1/move-ins", json=filing, headers={"idempotency-key": key, **clerk}, timeout=20)
    assert again.status_code == 201 and again.content == first.content
    assert db(f"rrs_{SHIBUYA}").value("select count(*) from move_in_reviews where resident_codes like %s", (f"%{code}%",)) == 0
    assert db(f"rrs_{SHIBUYA}").value("select count(*) from residents where resident_code = %s", (code,)) == 1


# -- the mechanism on its own, on the register's database: 5xx, a lost answer, a lease that ran out ----------------


def mechanism(network, *, lease_seconds: float = 60.0):
    """A small app under the middleware, on the register's idempotency_keys table; every call counted."""
    engine = make_engine(network.database_url(f"municipal_rrs.{CHIYODA}"), pool_size=2, max_overflow=0)
    sessions = make_sessionmaker(engine)
    store = IdempotencyStore(sessions, IdempotencyKey, lease_seconds=lease_seconds)
    watch_commits(engine.sync_engine)
    app = FastAPI()
    calls: list[str] = []

    @app.post("/fail")
    async def fail():
        calls.append("fail")
        return JSONResponse({"n": len(calls)}, status_code=503 if len(calls) == 1 else 201)

    @app.post("/commit-then-fail")
    async def commit_then_fail():
        calls.append("commit-then-fail")
        async with sessions() as session, session.begin():
            await session.execute(text("select 1"))
        return JSONResponse({"n": len(calls)}, status_code=500)

    @app.post("/connection-commit-then-fail")
    async def connection_commit_then_fail():  # a plain Connection's commit, as a bulk job's COPY commits
        calls.append("connection-commit-then-fail")
        async with engine.connect() as conn, conn.begin():
            await conn.execute(text("select 1"))
        return JSONResponse({"n": len(calls)}, status_code=500)

    @app.post("/ok")
    async def ok():
        calls.append("ok")
        return JSONResponse({"n": len(calls)}, status_code=201, headers={"location": f"/things/{len(calls)}"})

    caller = f"test-{uuid.uuid4()}"

    async def who(request):
        return request.headers.get("x-caller", caller)

    wrapped = IdempotencyMiddleware(app, store=store, caller=who, engine=engine.sync_engine)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://test")
    return engine, store, client, calls, caller


def test_a_5xx_that_committed_nothing_releases_the_key_and_one_that_committed_keeps_it(network):
    async def run():
        engine, _store, client, calls, _caller = mechanism(network)
        async with client:
            first = await client.post("/fail", json={"a": 1}, headers={"idempotency-key": "k1"})
            assert first.status_code == 503
            retry = await client.post("/fail", json={"a": 1}, headers={"idempotency-key": "k1"})
            assert retry.status_code == 201 and calls == ["fail", "fail"]
            replay = await client.post("/fail", json={"a": 1}, headers={"idempotency-key": "k1"})
            assert replay.status_code == 201 and replay.json() == {"n": 2} and calls == ["fail", "fail"]

            first = await client.post("/commit-then-fail", json={}, headers={"idempotency-key": "k2"})
            again = await client.post("/commit-then-fail", json={}, headers={"idempotency-key": "k2"})
            assert first.status_code == again.status_code == 500 and again.json() == first.json()
            assert calls.count("commit-then-fail") == 1

            first = await client.post("/connection-commit-then-fail", json={}, headers={"idempotency-key": "k4"})
            again = await client.post("/connection-commit-then-fail", json={}, headers={"idempotency-key": "k4"})
            assert first.status_code == again.status_code == 500 and calls.count("connection-commit-then-fail") == 1

            created = await client.post("/ok", json={}, headers={"idempotency-key": "k3"})
            replayed = await client.post("/ok", json={}, headers={"idempotency-key": "k3"})
            assert replayed.headers["location"] == created.headers["location"] and calls.count("ok") == 1
        await engine.dispose()

    asyncio.run(run())


def test_a_node_that_stopped_after_the_change_says_the_answer_is_lost_and_one_that_stopped_before_runs_again(network):
    async def run():
        engine, store, client, calls, caller = mechanism(network, lease_seconds=1.0)
        fp = fingerprint(b"{}")
        async with client:
            # the change committed (its row says so, in the same transaction), then the node stopped
            lost = await store.claim(caller=caller, method="POST", path="/ok", key="crash-after", fingerprint=fp, engine=engine.sync_engine)
            async with store.sessions() as session, session.begin():
                await session.run_sync(lambda s: store.mark_committed(s.connection().connection.dbapi_connection, lost.attempt))
            busy = await client.post("/ok", content=b"{}", headers={"idempotency-key": "crash-after"})
            assert busy.status_code == 409 and slug(busy) == "idempotency-key-in-use" and busy.headers["retry-after"] == "1"
            await asyncio.sleep(1.2)
            gone = await client.post("/ok", content=b"{}", headers={"idempotency-key": "crash-after"})
            assert gone.status_code == 409 and slug(gone) == "idempotency-answer-lost"
            assert calls == []

            # the node stopped before anything committed: once the lease ran out, a retry runs it
            stopped = await store.claim(caller=caller, method="POST", path="/ok", key="crash-before", fingerprint=fp, engine=engine.sync_engine)
            await asyncio.sleep(1.2)
            retried = await client.post("/ok", content=b"{}", headers={"idempotency-key": "crash-before"})
            assert retried.status_code == 201 and calls == ["ok"]
            # …and the first attempt, had it only been slow, can no longer commit its change
            try:
                async with store.sessions() as session, session.begin():
                    await session.run_sync(lambda s: store.mark_committed(s.connection().connection.dbapi_connection, stopped.attempt))
            except Exception as exc:
                assert "taken over" in str(exc)
            else:
                raise AssertionError("the attempt whose key was taken over committed")
        await engine.dispose()

    asyncio.run(run())


def test_keys_past_their_retention_are_new_keys_and_are_pruned(network, db):
    async def run():
        engine, store, client, calls, caller = mechanism(network)
        store.retention_seconds = 1.0
        async with client:
            first = await client.post("/ok", json={"a": 1}, headers={"idempotency-key": "old"})
            assert (await client.post("/ok", json={"a": 1}, headers={"idempotency-key": "old"})).content == first.content
            await asyncio.sleep(1.2)
            later = await client.post("/ok", json={"a": 2}, headers={"idempotency-key": "old"})  # the key is free again
            assert later.status_code == 201 and calls == ["ok", "ok"]
            await client.post("/ok", json={}, headers={"idempotency-key": "pruned"})
            await asyncio.sleep(1.2)
            assert await store.prune() >= 2
        await engine.dispose()
        return caller

    caller = asyncio.run(run())
    assert db(f"rrs_{CHIYODA}").value("select count(*) from idempotency_keys where caller = %s", (caller,)) == 0

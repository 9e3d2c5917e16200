"""Bulk provision (一括提供): a job file answered row by row, every found row
recorded as a provision, and a job that survives a SIGKILL of the national
server with every row answered exactly once (issue 4)."""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter

import httpx
import pytest

from contracts.identifiers import new_resident_code
from services.network import Network
from tests.conftest import TenantDb, running_network, wait_until
from tests.e2e.helpers import birth_body, query, register, unique_reason

NATIONAL = "national_server.national"


def _auth(net: Network, agency: str) -> dict:
    return {"authorization": f"Bearer {net.agency_token(agency)}"}


def submit(net: Network, agency: str, affair: str, lines: list[str], *, reason: str | None = None, content_type: str = "application/x-ndjson") -> httpx.Response:
    params = {"affair": affair} | ({"reason": reason} if reason else {})
    body = ("\n".join(lines) + "\n").encode()
    return httpx.post(f"{net.url(NATIONAL)}/v1/bulk-jobs", params=params, content=body, headers=_auth(net, agency) | {"content-type": content_type}, timeout=120)


def job(net: Network, agency: str, job_id: str) -> httpx.Response:
    return httpx.get(f"{net.url(NATIONAL)}/v1/bulk-jobs/{job_id}", headers=_auth(net, agency), timeout=10)


def wait_completed(net: Network, agency: str, job_id: str, *, timeout: float = 60) -> dict:
    return wait_until(lambda: (j := job(net, agency, job_id).json())["status"] == "completed" and j, timeout=timeout, what=f"bulk job {job_id} completed")


def result(net: Network, agency: str, job_id: str) -> list[dict]:
    response = httpx.get(f"{net.url(NATIONAL)}/v1/bulk-jobs/{job_id}/result", headers=_auth(net, agency), timeout=120)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def _row(**query) -> str:
    return json.dumps(query, ensure_ascii=False)


def _at_national(db, code: str) -> bool:
    return db("national").value("select count(*) from identity where resident_code = %s", (code,)) == 1


def _records_of_job(tenant: TenantDb, job_id: str) -> list[dict]:
    rows = tenant.rows("select payload from bulk_outbox where kind = 'provision-record' and payload::jsonb ->> 'bulk_job_id' = %s", (job_id,))
    return [json.loads(r[0]) for r in rows]


def test_a_job_answers_each_row_and_records_found_rows_only(network, db):
    a = register(network, "131016")
    b = register(network, "131130")
    for person in (a, b):
        wait_until(lambda: _at_national(db, person["resident_code"]), what="registration at national")
    absent = new_resident_code()
    reason = unique_reason()
    lines = [
        _row(type="ByResidentCode", resident_code=a["resident_code"]),  # 1 found
        _row(type="ByBasicItems", family_name=b["name"]["family_name"], given_name=b["name"]["given_name"], birth_date=b["birth_date"], sex=b["sex"]),  # 2 found
        _row(type="ByResidentCode", resident_code=absent),  # 3 not found
        _row(type="ByResidentCode", resident_code="123"),  # 4 invalid: not a resident code
        "this is not json",  # 5 invalid
        "",  # 6 blank: skipped, but counted as a line
        _row(type="ByBasicItems", family_name=a["name"]["family_name"], given_name=a["name"]["given_name"], birth_date=a["birth_date"]),  # 7 found
        _row(type="ByBasicItems", birth_date=a["birth_date"]),  # 8 invalid: a search needs a name
        _row(type="ByPseudonym", pseudonym="p1" + "a" * 44),  # 9 not found: not a pseudonym issued to this agency
        _row(type="ByResidentCode", resident_code=a["resident_code"], affair="passport-issuance"),  # 10 invalid: per-job member in a row
    ]
    submitted = submit(network, "pension-service", "pension-benefits", lines, reason=reason)
    assert submitted.status_code == 202, submitted.text
    body = submitted.json()
    assert body["status"] == "queued" and body["total_rows"] == 9 and body["affair"] == "pension-benefits" and body["reason"] == reason
    job_id = body["job_id"]

    done = wait_completed(network, "pension-service", job_id)
    assert (done["done_rows"], done["found_rows"]) == (9, 3) and done["finished_at"]
    rows = {r["row"]: r for r in result(network, "pension-service", job_id)}
    assert sorted(rows) == [1, 2, 3, 4, 5, 7, 8, 9, 10]
    assert {n: r["status"] for n, r in rows.items()} == {
        1: "found", 2: "found", 3: "not_found", 4: "invalid", 5: "invalid", 7: "found", 8: "invalid", 9: "not_found", 10: "invalid",
    }
    assert [p["resident_code"] for p in rows[1]["persons"]] == [a["resident_code"]]
    assert rows[1]["persons"][0]["name"]["family_name"] == a["name"]["family_name"]
    assert "individual_number" not in rows[1]["persons"][0], "the affair does not cover the individual number"
    assert [p["resident_code"] for p in rows[2]["persons"]] == [b["resident_code"]]
    assert [p["resident_code"] for p in rows[7]["persons"]] == [a["resident_code"]]
    assert "住民票コード" in rows[4]["reason"] and "name" in rows[8]["reason"] and "affair" in rows[10]["reason"]
    assert all(rows[n]["persons"] == [] for n in (3, 4, 5, 8, 9, 10))

    # one provision record per person provided, nothing for the other rows, and the resident's log gets them
    records = _records_of_job(db("national"), job_id)
    assert sorted(r["resident_code"] for r in records) == sorted([a["resident_code"], b["resident_code"], a["resident_code"]])
    assert {(r["query_type"], r["reason"], r["recipient"], r["affair"]) for r in records} == {("BulkJob", reason, "pension-service", "pension-benefits")}
    logged = wait_until(
        lambda: db("provlog").value("select count(*) from provision_records where payload::jsonb ->> 'bulk_job_id' = %s", (job_id,)) == 3,
        what="the bulk job's provision records in the provision log",
    )
    assert logged

    # another agency does not see the job at all
    assert job(network, "mofa-passport", job_id).status_code == 404
    assert httpx.get(f"{network.url(NATIONAL)}/v1/bulk-jobs/{job_id}/result", headers=_auth(network, "mofa-passport")).status_code == 404
    listed = httpx.get(f"{network.url(NATIONAL)}/v1/bulk-jobs", headers=_auth(network, "mofa-passport")).json()["jobs"]
    assert job_id not in {j["job_id"] for j in listed}


def test_a_pseudonymous_affair_gets_pseudonyms_and_resolves_them(network, db):
    a = register(network, "131016")
    b = register(network, "272035")
    for person in (a, b):
        wait_until(lambda: _at_national(db, person["resident_code"]), what="registration at national")
    def by_name(person: dict) -> dict:  # a pseudonymous affair searches by what it receives, never by the resident code
        return {"type": "ByBasicItems", "family_name": person["name"]["family_name"], "given_name": person["name"]["given_name"], "birth_date": person["birth_date"]}

    issued = query(network, "mofa-passport", {**by_name(a), "affair": "passport-issuance"})
    pseudonym = issued.json()["persons"][0]["pseudonym"]

    submitted = submit(network, "mofa-passport", "passport-issuance", [
        _row(type="ByPseudonym", pseudonym=pseudonym),
        _row(**by_name(b)),
    ])
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    wait_completed(network, "mofa-passport", job_id)
    first, second = result(network, "mofa-passport", job_id)
    assert first["status"] == second["status"] == "found"
    assert [p["pseudonym"] for p in first["persons"]] == [pseudonym]
    assert first["persons"][0]["name"]["family_name"] == a["name"]["family_name"]
    for person in first["persons"] + second["persons"]:
        assert "resident_code" not in person and "individual_number" not in person and person["pseudonym"].startswith("p1")
    assert second["persons"][0]["pseudonym"] != pseudonym

    # the pension service cannot use the passport office's pseudonym
    stolen = submit(network, "pension-service", "pension-benefits", [_row(type="ByPseudonym", pseudonym=pseudonym)])
    stolen_id = stolen.json()["job_id"]
    wait_completed(network, "pension-service", stolen_id)
    assert [r["status"] for r in result(network, "pension-service", stolen_id)] == ["not_found"]
    assert _records_of_job(db("national"), stolen_id) == []


def test_submissions_that_do_not_fit_are_refused_and_recorded(network, db):
    row = _row(type="ByResidentCode", resident_code=new_resident_code())
    before = db("national").value("select count(*) from refusals where reason = 'affair-not-authorised' and path = '/v1/bulk-jobs'")
    refused = submit(network, "mofa-passport", "pension-benefits", [row])
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"].endswith("/affair-not-authorised")
    assert db("national").value("select count(*) from refusals where reason = 'affair-not-authorised' and path = '/v1/bulk-jobs'") == before + 1
    assert db("national").value("select caller from refusals where path = '/v1/bulk-jobs' order by id desc limit 1") == "agency-mofa-passport"

    jobs_before = db("national").value("select count(*) from bulk_jobs")
    assert submit(network, "pension-service", "pension-benefits", ["a,b,c", "1,2,3"]).json()["type"].endswith("/not-ndjson")
    assert submit(network, "pension-service", "pension-benefits", [row], content_type="text/csv").status_code == 415
    assert submit(network, "pension-service", "pension-benefits", []).status_code == 400
    unsigned = httpx.post(f"{network.url(NATIONAL)}/v1/bulk-jobs", params={"affair": "pension-benefits"}, content=row.encode(), headers={"content-type": "application/x-ndjson"})
    assert unsigned.status_code == 401
    assert db("national").value("select count(*) from bulk_jobs") == jobs_before
    assert db("national").value("select count(*) from bulk_rows where job_id not in (select job_id from bulk_jobs)") == 0


@pytest.fixture(scope="module")
def own_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("bulk-restart")) as net:
        yield net


def test_a_job_interrupted_by_a_server_kill_completes_with_every_row_exactly_once(own_network):
    net = own_network
    national = TenantDb(net, "national")
    people = [register(net, municipality, birth_body(municipality)) for municipality in ("131016", "131130", "272035") for _ in range(10)]
    codes = [p["resident_code"] for p in people]
    known = set(codes)
    wait_until(lambda: national.value("select count(*) from identity where resident_code = any(%s)", (codes,)) == len(codes), timeout=120, what="30 registrations at national")
    absent = [new_resident_code() for _ in range(570)]  # 1 row in 20 finds someone
    total = 40_000
    asked = [(codes + absent)[i % (len(codes) + len(absent))] for i in range(total)]
    expected = {n: ("found" if code in known else "not_found") for n, code in enumerate(asked, start=1)}
    submitted = submit(net, "pension-service", "pension-benefits", [_row(type="ByResidentCode", resident_code=c) for c in asked], reason=unique_reason())
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]

    mid = wait_until(lambda: 0 < (j := job(net, "pension-service", job_id).json())["done_rows"] and j, timeout=120, interval=0.05, what="the job under way")
    assert mid["status"] == "running" and mid["done_rows"] < total
    early = httpx.get(f"{net.url(NATIONAL)}/v1/bulk-jobs/{job_id}/result", headers=_auth(net, "pension-service"))
    assert early.status_code == 409 and early.json()["type"].endswith("/bulk-job-not-completed")
    net.stop_node(NATIONAL, kill=True)

    # what a crash leaves: only whole chunks, each with its records, and the job not finished
    done, found = national.rows("select done_rows, found_rows from bulk_jobs where job_id = %s", (job_id,))[0]
    assert 0 < done < total, f"the kill should land mid-job (done {done} of {total})"
    assert national.value("select count(*) from bulk_rows where job_id = %s and status is not null", (job_id,)) == done
    assert len(_records_of_job(national, job_id)) == found

    net.start_node(NATIONAL)
    finished = wait_completed(net, "pension-service", job_id, timeout=120)
    assert finished["done_rows"] == total
    rows = result(net, "pension-service", job_id)
    counts = Counter(r["row"] for r in rows)
    assert len(rows) == total and set(counts) == set(range(1, total + 1)) and max(counts.values()) == 1
    assert [r["row"] for r in rows] == sorted(counts), "the result file is ordered by row number"
    assert {r["row"]: r["status"] for r in rows} == expected
    assert all(r["persons"][0]["resident_code"] == asked[r["row"] - 1] for r in rows if r["status"] == "found")

    found_rows = sum(1 for s in expected.values() if s == "found")
    assert finished["found_rows"] == found_rows
    records = _records_of_job(national, job_id)
    assert len(records) == found_rows and len({r["record_id"] for r in records}) == found_rows
    assert Counter(r["resident_code"] for r in records) == Counter(c for c in asked if c in known)
    # the relay hands them all on towards the provision log (which stores them idempotently by record id)
    wait_until(
        lambda: national.value("select count(*) from bulk_outbox where kind = 'provision-record' and sent_at is not null and payload::jsonb ->> 'bulk_job_id' = %s", (job_id,)) == found_rows,
        timeout=120, interval=1.0, what="every provision record of the job delivered by the bulk worker's relay",
    )


def _children(pid: int) -> list[int]:
    return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is a Linux scheduling policy")
def test_the_bulk_worker_and_its_database_sessions_run_in_the_background(network, db):
    """Bulk work gets the CPU only when interactive work leaves it: the worker process and the
    PostgreSQL backends serving it run under SCHED_IDLE; the server and its own backends do not."""
    server = network.nodes[NATIONAL].process.pid
    [worker] = wait_until(lambda: [c for c in _children(server) if "services.national_server.bulk" in open(f"/proc/{c}/cmdline").read()], what="the bulk worker process")
    assert os.sched_getscheduler(worker) == os.SCHED_IDLE
    assert os.sched_getscheduler(server) == os.SCHED_OTHER

    def backends_by_policy() -> dict[int, list[int]]:
        pids = [r[0] for r in db("national").rows("select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()")]
        by_policy: dict[int, list[int]] = {}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                by_policy.setdefault(os.sched_getscheduler(pid), []).append(pid)
        return by_policy

    policies = wait_until(lambda: (p := backends_by_policy()).get(os.SCHED_IDLE) and p.get(os.SCHED_OTHER) and p, what="backends of the worker and of the server")
    assert len(policies[os.SCHED_IDLE]) <= 2, "only the worker's pool (1 + 1 connections) runs in the background"

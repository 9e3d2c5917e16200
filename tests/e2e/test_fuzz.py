"""Fuzzing every operation of every kind of service from its own OpenAPI document (issue 18: no input makes a 500).

For one node of each kind (the national server, a prefecture server where the topology has that tier, a CS gateway,
a register and the provision log) the live ``/openapi.json`` is loaded with schemathesis, and every operation gets a
bounded number of generated requests (valid and invalid data, derandomized: the same requests on every run), each sent
once with the credentials the route takes (:func:`credentials`) and once without any. Checks:

* ``not_a_server_error``: no 5xx, whatever the input;
* ``response_schema_conformance`` and ``content_type_conformance``: the answer has the documented media type and body.
  Every document declares its success answers, 422 and a ``default`` answer (services/common/problems.py
  ``document_problems``): every refusal (400, 401, 403, 404, 409, 413 …) is checked to be a problem document.

``status_code_conformance`` is not run: with a ``default`` answer declared it checks nothing, and the documents do not
list which refusals each route gives.

The fuzz runs on a network of its own: it calls operator endpoints (replays, resyncs, snapshots, reconciliations) that
would disturb the shared ``network`` of the session. ``JUKINET_FUZZ_EXAMPLES`` sets the generated cases per operation
(5 by default, each sent twice; ``make fuzz`` runs more and prints how many requests went to each service).
"""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from services.common.runtime import OPERATOR_PARTY
from services.common.tokens import load_private_key, sign_token
from services.common.topology import load_topology
from services.network import REPO_ROOT, Network
from tests.conftest import running_network, topology_under_test

EXAMPLES = int(os.environ.get("JUKINET_FUZZ_EXAMPLES", "5"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
MUNICIPALITY = "131016"
PREFECTURE = MUNICIPALITY[:2]

#: the node fuzzed for each kind of service (the prefecture server only where the topology has that tier)
NODES = {
    "national_server": "national_server.national",
    "prefecture_server": f"prefecture_server.{PREFECTURE}",
    "cs_gateway": f"cs_gateway.{MUNICIPALITY}",
    "municipal_rrs": f"municipal_rrs.{MUNICIPALITY}",
    "provision_log": "provision_log.provision_log",
}

#: operations known to fail, with why: (kind, METHOD, path) → reason (marked xfail strict)
KNOWN_FAILURES: dict[tuple[str, str, str], str] = {}

#: parameters fixed for an operation, passed to ``as_strategy``: the notices' long poll would hold a request up to a minute
FIXED: dict[tuple[str, str, str], dict] = {("cs_gateway", "GET", "/v1/rrs/notices"): {"query": {"wait": 0}}}

#: requests sent, per node (printed at the end of the module: ``make fuzz`` shows it)
SENT: Counter[str] = Counter()
#: operations that refused the credentials of :func:`credentials` (401) at least once: where the fuzz did not get in
REFUSED_CREDENTIALS: Counter[str] = Counter()


def _bytes(value) -> bytes:
    """A generated body as sent: text as UTF-8 (what cannot be encoded replaced), anything else as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    return json.dumps(value, default=str).encode()


# the two bodies that are not JSON: a bulk job's queries (NDJSON) and an OCSP request (DER)
schemathesis.serializer("application/x-ndjson", "application/ocsp-request")(lambda ctx, value: _bytes(value))


def _party_token(net: Network, issuer: str, audience: str) -> dict[str, str]:
    token = sign_token(load_private_key(net.private_keys / f"{issuer}.key"), issuer=issuer, audience=audience, lifetime_seconds=300)
    return {"authorization": f"Bearer {token}"}


def _agency(net: Network, prefecture: str | None) -> str:
    return next(a.id for a in net.topology.agencies if a.prefecture == prefecture)


def credentials(net: Network, node_id: str, path: str) -> dict[str, str]:
    """The headers of a caller this route admits, by service and path: the one place to change when a service's
    authentication changes."""
    node = net.nodes[node_id].node
    if path.startswith("/internal/v1/operator/"):
        return _party_token(net, OPERATOR_PARTY, node.party)
    if node.kind == "municipal_rrs":  # a supervisor's bearer token: the role that may use the most routes
        return net.staff_headers(node.tenant, "supervisor")
    if node.kind in ("national_server", "prefecture_server"):  # agencies on /v1, the tier below on /internal
        if path.startswith("/v1/"):
            prefecture = node.tenant if node.kind == "prefecture_server" else None
            return {"authorization": f"Bearer {net.agency_token(_agency(net, prefecture), audience=node.party)}"}
        if path.startswith("/internal/v1/recovery/"):
            return _party_token(net, f"rrs-{MUNICIPALITY}", node.party)
        return _party_token(net, f"cs-{MUNICIPALITY}", node.party)
    if node.kind == "cs_gateway":
        if path.startswith("/v1/rrs/"):
            return _party_token(net, f"rrs-{node.tenant}", node.party)
        if path.startswith("/internal/v1/wide-area-copies"):  # asked by another municipality's CS
            other = next(m.code for m in net.topology.municipalities if m.code != node.tenant)
            return _party_token(net, f"cs-{other}", node.party)
        if path.startswith("/internal/"):
            return _party_token(net, "national", node.party)
        return {}  # the online filings are signed by the resident's card, in the body
    if node.kind == "provision_log":
        if path.startswith("/v1/me/"):
            return _party_token(net, f"rrs-{MUNICIPALITY}", node.party)
        if path.startswith("/v1/incidents"):
            return _party_token(net, "national", node.party)
    return {}


def _operations() -> list:
    """Every operation of the exported documents (contracts/openapi), one test each; the live documents must match them."""
    tier = load_topology(topology_under_test()).network.prefecture_tier
    params = []
    for kind in NODES:
        document = json.loads((REPO_ROOT / "contracts" / "openapi" / f"{kind}.json").read_text())
        for path, item in document["paths"].items():
            for method in item:
                if method not in ("get", "put", "post", "delete", "patch"):
                    continue
                marks = []
                if kind == "prefecture_server" and not tier:
                    marks.append(pytest.mark.skip(reason="no prefecture servers in this topology"))
                reason = KNOWN_FAILURES.get((kind, method.upper(), path))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                params.append(pytest.param(kind, method.upper(), path, marks=marks, id=f"{kind} {method.upper()} {path}"))
    return params


@pytest.fixture(scope="module")
def fuzz_network(tmp_path_factory):
    with running_network(tmp_path_factory.mktemp("fuzz-network")) as net:
        yield net
    total = sum(SENT.values())
    print(f"\nfuzz: {EXAMPLES} generated cases per operation, each sent with and without credentials")
    for node_id, count in sorted(SENT.items()):
        print(f"  {node_id:32} {count:6} requests")
    print(f"  {'total':32} {total:6} requests")
    if REFUSED_CREDENTIALS:
        print("credentials refused (401) by:")
        for operation, count in sorted(REFUSED_CREDENTIALS.items()):
            print(f"  {operation} ({count}x)")


_schemas: dict[str, schemathesis.schemas.BaseSchema] = {}


def _live_schema(net: Network, node_id: str):
    if node_id not in _schemas:
        document = httpx.get(f"{net.url(node_id)}/openapi.json", timeout=10).raise_for_status().json()
        _schemas[node_id] = schemathesis.openapi.from_dict(document)
    return _schemas[node_id]


@pytest.mark.parametrize(("kind", "method", "path"), _operations())
def test_operation_never_fails_and_answers_as_documented(fuzz_network: Network, kind: str, method: str, path: str):
    net = fuzz_network
    node_id = NODES[kind]
    schema = _live_schema(net, node_id)
    operation = schema[path][method]  # a KeyError here: the live document differs from contracts/openapi (run `make contracts`)
    fixed = FIXED.get((kind, method, path), {})
    strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE, **fixed), operation.as_strategy(GenerationMode.NEGATIVE, **fixed))
    session = requests.Session()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=strategy)
    def send(case):
        for headers in (credentials(net, node_id, path), {}):
            SENT[node_id] += 1
            response = case.call(base_url=net.url(node_id), session=session, headers=headers, timeout=30)
            if headers and response.status_code == 401:
                REFUSED_CREDENTIALS[f"{node_id} {method} {path}"] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        send()
    finally:
        session.close()

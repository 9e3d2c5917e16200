"""The OpenAPI documents declare the problem answers the services give (services/common/problems.py): 422 and every
other refusal are RFC 9457 problem documents, not FastAPI's default ``HTTPValidationError``."""

from __future__ import annotations

import json

import pytest

from services.common.problems import PROBLEM_MEDIA_TYPE, document_problems
from services.network import REPO_ROOT

PROBLEM = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
SERVICES = ("municipal_rrs", "cs_gateway", "prefecture_server", "national_server", "provision_log")


@pytest.mark.parametrize("service", SERVICES)
def test_every_operation_declares_its_problems(service):
    document = json.loads((REPO_ROOT / "contracts" / "openapi" / f"{service}.json").read_text())
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["title", "status"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert responses["default"]["content"] == PROBLEM, f"{method} {path}"
            if "422" in responses:
                assert responses["422"]["content"] == PROBLEM, f"{method} {path}"


def test_declaring_twice_changes_nothing():
    document = {"paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}, "422": {"description": "invalid"}}}}}}
    once = json.loads(json.dumps(document_problems(document)))
    assert document_problems(document) == once
    assert set(once["components"]["schemas"]) == {"Problem", "InvalidParam"}

"""The exported contracts (contracts/openapi, contracts/schemas) match the code.

A contract change without ``make contracts`` fails here, so the published
OpenAPI documents and JSON Schemas never drift from what the services accept.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from contracts import export

FIX = "run `make contracts` (python -m contracts.export) and commit the result"


@pytest.fixture(scope="module")
def rendered() -> dict[Path, str]:
    return export.render()


def test_render_covers_every_service_and_message(rendered):
    names = {p.as_posix() for p in rendered}
    for service in ("municipal_rrs", "cs_gateway", "prefecture_server", "national_server", "provision_log"):
        assert f"contracts/openapi/{service}.json" in names
    for schema in (
        "IdentityChange", "IdentityChangeAck", "IdentityChangeBatch", "ProvisionRecord", "ProvisionRecordList",
        "QueryResult", "PersonQuery", "RegisterResident", "ResidentRecord", "Problem", "affairs",
    ):
        assert f"contracts/schemas/{schema}.json" in names
    for content in rendered.values():
        assert content.endswith("\n")
        json.loads(content)


def test_exported_files_match_the_code(rendered):
    missing, differing = [], []
    for relative, content in sorted(rendered.items()):
        path = export.REPO_ROOT / relative
        if not path.is_file():
            missing.append(relative.as_posix())
            continue
        on_disk = path.read_bytes().decode("utf-8", errors="replace")
        if on_disk != content:
            diff = difflib.unified_diff(on_disk.splitlines(), content.splitlines(), f"{relative} (on disk)", f"{relative} (from code)", lineterm="", n=1)
            differing.append("\n".join(list(diff)[:20]))
    problems = []
    if missing:
        problems.append("missing: " + ", ".join(missing))
    if differing:
        problems.append("out of date:\n" + "\n".join(differing))
    assert not problems, f"exported contracts drifted from the code; {FIX}.\n" + "\n".join(problems)


def test_no_stale_exported_files(rendered):
    stale = export.stale_files(export.REPO_ROOT, rendered)
    assert not stale, f"exported files no longer produced by the code: {', '.join(p.as_posix() for p in stale)}; {FIX}"


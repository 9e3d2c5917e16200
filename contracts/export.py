"""Export the network's contracts: OpenAPI of every service and JSON Schemas.

Run ``python -m contracts.export`` (or ``make contracts``) after a contract
change; ``tests/unit/test_contracts_drift.py`` fails while the files on disk
differ from what :func:`render` produces.

Writes, relative to the repository root:

- ``contracts/openapi/<service>.json``: the OpenAPI document of each service,
  built from its app factory with a fixed, representative tenant. No server
  is started and no database is touched (the engine connects lazily); a
  throwaway Ed25519 key is generated into a temporary directory.
- ``contracts/schemas/<name>.json``: the JSON Schema of each boundary message,
  and ``affairs.json`` with the affairs catalogue.

Importing this module has no side effects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
OPENAPI_DIR = Path("contracts/openapi")
SCHEMAS_DIR = Path("contracts/schemas")

#: service → representative tenant (fixed, so the output is deterministic).
SERVICE_TENANTS: dict[str, str] = {
    "municipal_rrs": "131016",
    "cs_gateway": "131016",
    "prefecture_server": "13",
    "national_server": "national",
    "provision_log": "provision_log",
}

#: Never connected to: the engine is created lazily and no request is served.
_EXPORT_DATABASE_URL = "postgresql+psycopg://export:export@127.0.0.1:1/export"


def _dumps(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def _settings_class():
    """ServiceSettings that reads only its arguments (no ``JUKINET_*`` environment)."""
    from services.common.settings import ServiceSettings

    class ExportSettings(ServiceSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_other_sources):
            return (init_settings,)

    return ExportSettings


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Silence one logger's warnings for the duration (restored afterwards)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _openapi_documents() -> dict[str, dict]:
    import importlib

    from services.common.runtime import add_health
    from services.common.tokens import generate_key_pair
    from services.common.topology import Node

    settings_cls = _settings_class()
    documents: dict[str, dict] = {}
    # Every app instruments its engine; in one process the instrumentor warns
    # "already instrumented" for the second and later apps.
    with _quiet("opentelemetry.instrumentation.instrumentor"), tempfile.TemporaryDirectory(prefix="jukinet-export-") as tmp:
        tmp_path = Path(tmp)
        keys_dir = tmp_path / "public"
        pseudonym_key = tmp_path / "pseudonym.key"
        pseudonym_key.write_bytes(bytes(64))  # a throwaway key: the documents do not depend on it
        from services.national_server.jpki_store import generate_ca_key_file

        jpki_ca_key = generate_ca_key_file(tmp_path / "jpki-ca.key")  # throwaway too
        for service, tenant in SERVICE_TENANTS.items():
            party = Node(kind=service, tenant=tenant).party
            settings = settings_cls(
                pseudonym_key=pseudonym_key if service == "national_server" else None,
                jpki_ca_key=jpki_ca_key if service == "national_server" else None,
                service=service,
                tenant=tenant,
                database_url=_EXPORT_DATABASE_URL,
                keys_dir=keys_dir,
                private_key=generate_key_pair(tmp_path / "private", keys_dir, party),
                topology=REPO_ROOT / "deploy" / "topology.yaml",
            )
            module = importlib.import_module(f"services.{service}.app")
            app = module.build_app(settings)
            add_health(app, settings)  # as services.common.runtime.serve does (excluded from the schema)
            documents[service] = app.openapi()
    return documents


def _schemas() -> dict[str, dict]:
    from pydantic import TypeAdapter

    from contracts.affairs import AFFAIRS
    from contracts.bulk import BulkJob, BulkQuery, BulkResultRow
    from contracts.household import HouseholdAnswer, HouseholdComposition, HouseholdQuery, HouseholdRequest, ProvidedHousehold
    from contracts.identity import IdentityChange, IdentityChangeAck, IdentityChangeBatch
    from contracts.jpki import (
        AssuranceEvent, AssuranceState, CardPublicKeys, CertificateIssuanceRequest, CertificateStatus, FilingVerification, IssuedCertificate,
        IssuedCertificates, SignedFiling,
    )
    from contracts.moves import CsInboxMessage, CsNoticeBatch, MoveInFiling, MoveInFromAbroad, MoveOutCancellation, MoveOutFiling
    from contracts import dv
    from contracts.online import OnlineCertificateRenewal, OnlineFilingContent, OnlineFilingOutcome, OnlineFilingReceipt, OnlineSubmission
    from contracts.problem import Problem
    from contracts.push import ChangeNotification, EncryptedNotification, Follow, FollowRequest, NotificationFeed
    from contracts.provision import PersonQuery, ProvisionRecord, ProvisionRecordList, QueryResult
    from contracts.recovery import RecoveredPerson
    from contracts.register import RegisterResident, ResidentRecord
    from contracts.transparency import (
        ConsistencyProof, IncidentLogEntry, IncidentRecorded, IncidentReport, InclusionProof, LogLeaves, ProvisionLogEntry,
        ResidentProvisionList,
    )

    schemas: dict[str, dict] = {
        model.__name__: model.model_json_schema()
        for model in (
            IdentityChange,
            IdentityChangeAck,
            IdentityChangeBatch,
            ProvisionRecord,
            ProvisionRecordList,
            QueryResult,
            RegisterResident,
            ResidentRecord,
            Problem,
            BulkJob,
            BulkResultRow,
            ProvisionLogEntry,
            IncidentLogEntry,
            IncidentReport,
            IncidentRecorded,
            InclusionProof,
            ConsistencyProof,
            LogLeaves,
            ResidentProvisionList,
            ChangeNotification,
            EncryptedNotification,
            Follow,
            FollowRequest,
            NotificationFeed,
            HouseholdComposition,
            HouseholdRequest,
            HouseholdAnswer,
            HouseholdQuery,
            ProvidedHousehold,
            CertificateIssuanceRequest,
            CardPublicKeys,
            IssuedCertificate,
            IssuedCertificates,
            CertificateStatus,
            SignedFiling,
            FilingVerification,
            AssuranceState,
            AssuranceEvent,
        )
    }
    for model in (MoveOutFiling, MoveOutCancellation, MoveInFiling, MoveInFromAbroad, CsNoticeBatch, OnlineSubmission, OnlineCertificateRenewal,
                  OnlineFilingOutcome, OnlineFilingReceipt):
        schemas[model.__name__] = model.model_json_schema()
    for model in (dv.SupportMeasure, dv.SupportMeasureApplication, dv.SupportMeasureDecision, dv.SupportMeasureExtension, dv.SupportMeasureCancellation,
                  dv.SupportMeasureNotice, dv.SupportMeasureAck, dv.ProtectionMarker, dv.SupportMeasureAlert, dv.MeasureDelivery, dv.CertificateRequest,
                  dv.CertificateRequestOutcome, dv.CertificateRequestView, dv.ReviewDecision, dv.WideAreaRequest, dv.WideAreaAnswer,
                  dv.CertificateAttemptNotice, dv.OnlinePrefillRequest, dv.OnlinePrefill):
        schemas[model.__name__] = model.model_json_schema()
    schemas["RecoveredPerson"] = RecoveredPerson.model_json_schema()  # one NDJSON line of a recovery export
    schemas["CsInboxMessage"] = TypeAdapter(CsInboxMessage).json_schema()
    schemas["OnlineFilingContent"] = TypeAdapter(OnlineFilingContent).json_schema()
    schemas["PersonQuery"] = TypeAdapter(PersonQuery).json_schema()
    schemas["BulkQuery"] = TypeAdapter(BulkQuery).json_schema()
    schemas["affairs"] = {"affairs": [a.model_dump(mode="json") for a in AFFAIRS.values()]}
    return schemas


def render() -> dict[Path, str]:
    """Every exported file: path relative to the repository root → its content."""
    files: dict[Path, str] = {}
    for service, document in _openapi_documents().items():
        files[OPENAPI_DIR / f"{service}.json"] = _dumps(document)
    for name, schema in _schemas().items():
        files[SCHEMAS_DIR / f"{name}.json"] = _dumps(schema)
    return files


def write(root: Path = REPO_ROOT) -> tuple[list[Path], list[Path]]:
    """Write every rendered file under ``root`` and delete stale exported files.

    Returns (written, removed), both relative to ``root``; unchanged files are
    not rewritten.
    """
    files = render()
    written: list[Path] = []
    for relative, content in files.items():
        target = root / relative
        if target.is_file() and target.read_bytes() == content.encode("utf-8"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8", newline="\n")
        written.append(relative)
    removed = stale_files(root, files)
    for stale in removed:
        (root / stale).unlink()
    return written, removed


def stale_files(root: Path, files: dict[Path, str]) -> list[Path]:
    """Exported-looking files on disk (``*.json`` in the export directories) that :func:`render` no longer produces."""
    return sorted(
        path.relative_to(root)
        for directory in (OPENAPI_DIR, SCHEMAS_DIR)
        for path in (root / directory).glob("*.json")
        if path.relative_to(root) not in files
    )


def main() -> None:
    written, removed = write()
    for path in written:
        print(f"wrote {path}")
    for path in removed:
        print(f"removed {path}")
    if not written and not removed:
        print("contracts up to date")


if __name__ == "__main__":
    main()

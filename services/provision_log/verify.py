"""The offline verifier of the provision log.

Checks, from the log's published public key alone:

- ``inclusion BUNDLE``: a record's proof bundle (from the portal or
  ``/v1/me/provisions/{id}/proof``): the checkpoint's signature, that the
  entry is in the tree under the signed root, that the per-entry tag is the
  resident's, that the stated reason is the one committed to, that the record
  in the bundle is the one the leaf commits to (``provision/v2``: the whole
  record; ``provision/v1``: the fields the leaf carries), and that each
  incident in the bundle is a leaf under the same root naming the record,
  with the explanation it commits to;
- ``consistency OLD NEW PROOF``: that the log of the newer checkpoint extends
  the older one (nothing was removed or rewritten in between);
- ``log LEAVES CHECKPOINT``: a full audit — every leaf's hash is the hash of its
  entry, no leaf is missing, the recomputed root is the signed one, every
  record or incident stored beside a leaf is the one the leaf commits to, and
  every entry-less leaf is named by a retention-erasure leaf after it;
- ``audit --url``: downloads the newest checkpoint and all leaves from a running
  log and runs ``log``, checks the inclusion proof the log's stored tree gives
  for every leaf, and ``consistency`` against a checkpoint kept earlier.

Usage: ``python -m services.provision_log.verify --help``. Exit status 0 when
everything verifies, 1 otherwise.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from contracts.transparency import ConsistencyProof, InclusionPaths, InclusionProof, LogLeaf, LogLeaves, ProvisionLogEntry
from services.provision_log import checkpoint as cp
from services.provision_log import domain, merkle


class VerificationFailed(Exception):
    """The proof, the checkpoint or the log does not verify."""


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationFailed("the key is not an Ed25519 public key")
    return key


def _hashes(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v, validate=True) for v in values]


def _checkpoint(note: str, key: Ed25519PublicKey, origin: str | None) -> cp.Checkpoint:
    try:
        return cp.verify(note, key, origin=origin)
    except cp.CheckpointInvalid as exc:
        raise VerificationFailed(f"checkpoint: {exc}") from None


def check_inclusion(bundle: InclusionProof, key: Ed25519PublicKey, *, resident_code: str | None = None, origin: str | None = None) -> cp.Checkpoint:
    checkpoint = _checkpoint(bundle.checkpoint, key, origin)
    if checkpoint.size != bundle.tree_size:
        raise VerificationFailed(f"the bundle claims tree size {bundle.tree_size}, the checkpoint says {checkpoint.size}")
    entry = bundle.entry.encode("utf-8")
    if not merkle.verify_inclusion(merkle.leaf_hash(entry), bundle.leaf_index, checkpoint.size, _hashes(bundle.inclusion_path), checkpoint.root):
        raise VerificationFailed(f"the entry is not leaf {bundle.leaf_index} of the tree under the signed root (altered entry or proof)")
    try:
        parsed = ProvisionLogEntry.model_validate_json(entry)
    except ValueError as exc:
        raise VerificationFailed(f"the entry is not a provision entry: {exc}") from None
    if parsed.record_id != bundle.record_id:
        raise VerificationFailed("the entry is for another record")
    code = resident_code or bundle.resident_code
    if code is not None:
        if bundle.resident_tag_salt is None:
            raise VerificationFailed("the bundle carries no salt to check the resident tag")
        if domain.resident_tag(base64.b64decode(bundle.resident_tag_salt), code) != parsed.resident_tag:
            raise VerificationFailed(f"the entry is not about resident {code}")
    if bundle.reason is not None and domain.sha256_b64(bundle.reason) != parsed.reason_sha256:
        raise VerificationFailed("the stated reason is not the one in the log")
    if bundle.record is not None or (bundle.format != "jukinet-inclusion-proof/v1" and parsed.kind == domain.PROVISION_V2):
        if bundle.record is None:
            raise VerificationFailed("the record is missing from the bundle (its stored record is gone)")
        if bundle.resident_tag_salt is None:
            raise VerificationFailed("the bundle carries no salt to check the record")
        problem = domain.record_problem(parsed, bundle.record, base64.b64decode(bundle.resident_tag_salt))
        if problem is not None:
            raise VerificationFailed(f"the record is not the one in the log: {problem}")
        if code is not None and bundle.record.resident_code != code:
            raise VerificationFailed(f"the record is not about resident {code}")
    for incident in bundle.incidents:
        text = incident.entry.encode("utf-8")
        if not merkle.verify_inclusion(merkle.leaf_hash(text), incident.leaf_index, checkpoint.size, _hashes(incident.inclusion_path), checkpoint.root):
            raise VerificationFailed(f"the incident {incident.incident_id} is not leaf {incident.leaf_index} of the tree under the signed root")
        entry = domain.parse_incident_entry(incident.entry)
        if entry is None or entry.incident_id != incident.incident_id or bundle.record_id not in entry.record_ids:
            raise VerificationFailed(f"leaf {incident.leaf_index} is not an incident naming this record")
        if incident.explanation is None or domain.sha256_b64(incident.explanation) != entry.explanation_sha256:
            raise VerificationFailed(f"the explanation of incident {incident.incident_id} is not the one in the log")
    return checkpoint


def check_consistency(old_note: str, new_note: str, proof: ConsistencyProof, key: Ed25519PublicKey, *, origin: str | None = None) -> tuple[cp.Checkpoint, cp.Checkpoint]:
    old, new = _checkpoint(old_note, key, origin), _checkpoint(new_note, key, origin)
    if old.origin != new.origin:
        raise VerificationFailed("the checkpoints are of different logs")
    if (proof.first_size, proof.second_size) != (old.size, new.size):
        raise VerificationFailed(f"the proof is for sizes {proof.first_size}→{proof.second_size}, not {old.size}→{new.size}")
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, _hashes(proof.path)):
        raise VerificationFailed(f"the tree of size {new.size} does not extend the tree of size {old.size}: the log was rewritten")
    return old, new


def check_log(leaves: list[LogLeaf], note: str, key: Ed25519PublicKey, *, origin: str | None = None, stored: bool | None = None) -> cp.Checkpoint:
    """The whole tree from its leaves against the signed root; then (``stored``: by default when the leaves
    carry ``stored_sha256``, as ``/v1/log/leaves`` gives them) every record or incident the log stores
    beside a leaf against that leaf, and every entry-less leaf against an erasure leaf naming it."""
    checkpoint = _checkpoint(note, key, origin)
    by_index = {leaf.leaf_index: leaf for leaf in leaves}
    tree = merkle.MemoryTree()
    for index in range(checkpoint.size):
        leaf = by_index.get(index)
        if leaf is None:
            raise VerificationFailed(f"leaf {index} is missing (the checkpoint covers {checkpoint.size} leaves)")
        stated = base64.b64decode(leaf.leaf_hash)
        if leaf.entry is not None and merkle.leaf_hash(leaf.entry.encode("utf-8")) != stated:
            raise VerificationFailed(f"leaf {index}: the entry does not match its hash (altered)")
        tree.append(stated)
    if tree.root() != checkpoint.root:
        raise VerificationFailed("the recomputed root differs from the signed root (entries removed, altered or reordered)")
    if stored is None:
        stored = any(leaf.stored_sha256 is not None for leaf in leaves)
    check_erasures([by_index[i] for i in range(checkpoint.size)])
    if stored:
        check_stored([by_index[i] for i in range(checkpoint.size)])
    return checkpoint


def check_erasures(leaves: list[LogLeaf]) -> None:
    """Every leaf without content is named by an erasure leaf after it (erased by retention, not removed)."""
    erased: set[int] = set()
    for leaf in reversed(leaves):
        if leaf.entry is None:
            if leaf.leaf_index not in erased:
                raise VerificationFailed(f"leaf {leaf.leaf_index} has no content and no erasure leaf names it (its content was removed, not erased by retention)")
            continue
        marker = domain.parse_erasure_entry(leaf.entry) if '"erasure/' in leaf.entry else None
        if marker is not None:
            for a, b in marker.leaf_ranges:
                erased.update(range(a, min(b, leaf.leaf_index)))


def check_stored(leaves: list[LogLeaf]) -> None:
    """Every provision or incident leaf with content has its stored record, and that record is the one it commits to."""
    for leaf in leaves:
        if leaf.entry is None or '"erasure/' in leaf.entry:
            continue
        kind = "record" if domain.parse_provision_entry(leaf.entry) is not None else "incident"
        if leaf.stored_sha256 is None:
            raise VerificationFailed(f"leaf {leaf.leaf_index}: its stored {kind} is missing (removed from the log's database)")
        if leaf.stored_sha256 != domain.sha256_b64(leaf.entry):
            raise VerificationFailed(f"leaf {leaf.leaf_index}: its stored {kind} is not the one the leaf commits to (altered in the log's database)")


def check_proofs(paths: list[InclusionPaths], leaves: list[LogLeaf], checkpoint: cp.Checkpoint) -> None:
    """The inclusion proof the log gives for every leaf verifies under the signed root (its stored tree is sound)."""
    by_index = {leaf.leaf_index: leaf for leaf in leaves}
    seen = 0
    for page in paths:
        if page.tree_size != checkpoint.size:
            raise VerificationFailed(f"proofs for size {page.tree_size}, not {checkpoint.size}")
        for offset, path in enumerate(page.paths):
            index = page.start + offset
            if not merkle.verify_inclusion(base64.b64decode(by_index[index].leaf_hash), index, checkpoint.size, _hashes(path), checkpoint.root):
                raise VerificationFailed(f"leaf {index}: the log's stored tree gives an inclusion proof that does not verify (its nodes were altered)")
            seen += 1
    if seen != checkpoint.size:
        raise VerificationFailed(f"the log gave proofs for {seen} of {checkpoint.size} leaves")


def fetch_log(url: str) -> tuple[str, list[LogLeaf]]:
    """The newest checkpoint and every leaf it covers, from a running log."""
    note, leaves, _, _ = fetch_audit(url, proofs=False)
    return note, leaves


def fetch_audit(url: str, *, proofs: bool = True) -> tuple[str, list[LogLeaf], list[InclusionPaths], int]:
    """The newest checkpoint, every leaf it covers, (``proofs``) every leaf's inclusion proof at its size,
    and how many stored records no leaf commits to."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=60) as client:
        note = client.get("/v1/log/checkpoint").raise_for_status().text
        size = cp.parse(note)[0].size
        leaves: list[LogLeaf] = []
        unlogged = 0
        while len(leaves) < size:
            page = LogLeaves.model_validate_json(client.get("/v1/log/leaves", params={"start": len(leaves), "limit": 1000}).raise_for_status().content)
            if page.records_without_leaf is not None:
                unlogged = page.records_without_leaf
            if not page.leaves:
                break
            leaves.extend(leaf for leaf in page.leaves if leaf.leaf_index < size)
        paths: list[InclusionPaths] = []
        if proofs:
            for start in range(0, size, 1000):
                response = client.get("/v1/log/proofs", params={"size": size, "start": start, "limit": 1000})
                if response.status_code == 400:
                    raise VerificationFailed(f"the log cannot prove its leaves: {response.json().get('detail')}")
                paths.append(InclusionPaths.model_validate_json(response.raise_for_status().content))
        return note, leaves, paths, unlogged


# --- command line ---------------------------------------------------------------------------

cli = typer.Typer(help="Verify the provision log offline from its public key.", no_args_is_help=True, add_completion=False)
console = Console(soft_wrap=True)
KeyOption = Annotated[Path, typer.Option("--key", help="the log's public key (PEM), e.g. keys/public/provision-log.pub", exists=True, dir_okay=False)]
OriginOption = Annotated[str | None, typer.Option("--origin", help="expected log origin (first checkpoint line)")]


def _run(check) -> None:
    try:
        message = check()
    except (VerificationFailed, ValueError, httpx.HTTPError) as exc:
        console.print(f"[bold red]FAILED[/] {exc}")
        raise typer.Exit(1) from None
    console.print(f"[bold green]OK[/] {message}")


@cli.command()
def inclusion(
    bundle: Annotated[Path, typer.Argument(help="proof bundle JSON", exists=True, dir_okay=False)], key: KeyOption,
    resident_code: Annotated[str | None, typer.Option(help="check that the entry is about this resident")] = None, origin: OriginOption = None,
) -> None:
    """Check that a record is in the log under a signed checkpoint."""

    def check() -> str:
        proof = InclusionProof.model_validate_json(bundle.read_bytes())
        checkpoint = check_inclusion(proof, load_public_key(key.read_bytes()), resident_code=resident_code, origin=origin)
        return f"record {proof.record_id} is leaf {proof.leaf_index} of {checkpoint.origin} at size {checkpoint.size} (signed {checkpoint.signed_at:%Y-%m-%d %H:%M:%SZ})"

    _run(check)


@cli.command()
def consistency(
    old: Annotated[Path, typer.Argument(help="older checkpoint (text)", exists=True, dir_okay=False)],
    new: Annotated[Path, typer.Argument(help="newer checkpoint (text)", exists=True, dir_okay=False)],
    proof: Annotated[Path, typer.Argument(help="consistency proof JSON (/v1/log/consistency)", exists=True, dir_okay=False)],
    key: KeyOption, origin: OriginOption = None,
) -> None:
    """Check that the newer checkpoint's log extends the older one's."""

    def check() -> str:
        a, b = check_consistency(old.read_text(), new.read_text(), ConsistencyProof.model_validate_json(proof.read_bytes()), load_public_key(key.read_bytes()), origin=origin)
        return f"size {b.size} extends size {a.size}"

    _run(check)


@cli.command("log")
def log_command(
    leaves: Annotated[Path, typer.Argument(help="leaves JSON (/v1/log/leaves answer, or a list of leaves)", exists=True, dir_okay=False)],
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint (text)", exists=True, dir_okay=False)],
    key: KeyOption, origin: OriginOption = None,
) -> None:
    """Recompute the whole tree from its leaves and compare with a signed checkpoint."""

    def check() -> str:
        data = json.loads(leaves.read_text())
        items = LogLeaves.model_validate(data).leaves if isinstance(data, dict) else [LogLeaf.model_validate(x) for x in data]
        c = check_log(items, checkpoint.read_text(), load_public_key(key.read_bytes()), origin=origin)
        return f"all {c.size} leaves of {c.origin} verify against the signed root"

    _run(check)


@cli.command()
def audit(
    url: Annotated[str, typer.Option(help="base URL of the provision log")], key: KeyOption,
    previous: Annotated[Path | None, typer.Option(help="a checkpoint kept earlier: check the log still extends it", exists=True, dir_okay=False)] = None,
    save: Annotated[Path | None, typer.Option(help="write the newest checkpoint here (keep it for the next audit)")] = None,
    origin: OriginOption = None,
) -> None:
    """Download the newest checkpoint and every leaf, and verify them (and consistency with --previous)."""

    def check() -> str:
        public_key = load_public_key(key.read_bytes())
        note, items, paths, unlogged = fetch_audit(url)
        c = check_log(items, note, public_key, origin=origin, stored=True)
        check_proofs(paths, items, c)
        if unlogged:
            raise VerificationFailed(f"{unlogged} stored records have no leaf in the log (added or re-identified in the log's database)")
        message = f"all {c.size} leaves verify against the signed root; every stored record matches its leaf; every proof the log gives verifies"
        if previous is not None:
            old = cp.parse(previous.read_text())[0]
            proof = ConsistencyProof.model_validate_json(httpx.get(f"{url.rstrip('/')}/v1/log/consistency", params={"first": old.size, "second": c.size}, timeout=30).raise_for_status().content)
            check_consistency(previous.read_text(), note, proof, public_key, origin=origin)
            message += f"; size {c.size} extends the kept checkpoint of size {old.size}"
        if save is not None:
            save.write_text(note)
        return message

    _run(check)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

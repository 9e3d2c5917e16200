"""The offline verifier of the provision log.

Checks, from the log's published public key alone:

- ``inclusion BUNDLE``: a record's proof bundle (from the portal or
  ``/v1/me/provisions/{id}/proof``): the checkpoint's signature, that the
  entry is in the tree under the signed root, that the per-entry tag is the
  resident's, and that the stated reason is the one committed to;
- ``consistency OLD NEW PROOF``: that the log of the newer checkpoint extends
  the older one (nothing was removed or rewritten in between);
- ``log LEAVES CHECKPOINT``: a full audit — every leaf's hash is the hash of its
  entry, no leaf is missing, and the recomputed root is the signed one;
- ``audit --url``: downloads the newest checkpoint and all leaves from a running
  log and runs ``log`` (and ``consistency`` against a checkpoint kept earlier).

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

from contracts.transparency import ConsistencyProof, InclusionProof, LogLeaf, LogLeaves, ProvisionLogEntry
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


def check_log(leaves: list[LogLeaf], note: str, key: Ed25519PublicKey, *, origin: str | None = None) -> cp.Checkpoint:
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
    return checkpoint


def fetch_log(url: str) -> tuple[str, list[LogLeaf]]:
    """The newest checkpoint and every leaf it covers, from a running log."""
    with httpx.Client(base_url=url.rstrip("/"), timeout=30) as client:
        note = client.get("/v1/log/checkpoint").raise_for_status().text
        size = cp.parse(note)[0].size
        leaves: list[LogLeaf] = []
        while len(leaves) < size:
            page = LogLeaves.model_validate_json(client.get("/v1/log/leaves", params={"start": len(leaves), "limit": 1000}).raise_for_status().content)
            if not page.leaves:
                break
            leaves.extend(page.leaves)
        return note, leaves


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
        note, items = fetch_log(url)
        c = check_log(items, note, public_key, origin=origin)
        message = f"all {c.size} leaves verify against the signed root"
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

"""Signed checkpoints: a C2SP ``tlog-checkpoint`` in a C2SP ``signed-note``. No I/O.

A checkpoint is plain text::

    jukinet.example/provision-log          ← origin (names the log)
    1234                                   ← tree size
    1hQ5...base64 root hash...=            ← RFC 9162 root of the first 1234 leaves
    time 2026-11-27T05:14:09Z              ← when it was signed (extension line)

    — provision-log Aa1B...base64...       ← signature line

The signature line is an em dash, the key name, and base64 of the 4-byte key
id followed by the 64-byte Ed25519 signature over every byte of the text
above the blank line. Key id = first 4 bytes of
SHA-256(key name || "\\n" || 0x01 || raw 32-byte public key), as in signed-note.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_NAME = "provision-log"
DEFAULT_ORIGIN = "jukinet.example/provision-log"
_DASH = "\u2014"


class CheckpointInvalid(Exception):
    """The note is malformed, or not signed by the expected key."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    signed_at: datetime

    def body(self) -> str:
        stamp = self.signed_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\ntime {stamp}\n"


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + raw).digest()[:4]


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey, *, name: str = KEY_NAME) -> str:
    body = checkpoint.body()
    signature = key.sign(body.encode())
    blob = base64.b64encode(key_id(name, key.public_key()) + signature).decode()
    return f"{body}\n{_DASH} {name} {blob}\n"


def parse(note: str) -> tuple[Checkpoint, str, list[tuple[str, bytes]]]:
    """The checkpoint, the signed text, and the (key name, key id + signature) of each signature line."""
    body, sep, signatures = note.partition("\n\n")
    if not sep:
        raise CheckpointInvalid("no blank line between the checkpoint and its signatures")
    body += "\n"
    lines = body.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointInvalid("a checkpoint has an origin, a size and a root hash")
    origin, size_text, root_text = lines[:3]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointInvalid(f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError:
        raise CheckpointInvalid("root hash is not base64") from None
    if len(root) != 32:
        raise CheckpointInvalid("root hash is not 32 bytes")
    signed_at = datetime.fromtimestamp(0, UTC)
    for extension in lines[3:]:
        if extension.startswith("time "):
            try:
                signed_at = datetime.strptime(extension[5:], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:
                raise CheckpointInvalid("time extension is not RFC 3339 UTC") from None
    sigs = []
    for line in signatures.split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise CheckpointInvalid("malformed signature line")
        try:
            sigs.append((parts[1], base64.b64decode(parts[2], validate=True)))
        except ValueError:
            raise CheckpointInvalid("signature is not base64") from None
    return Checkpoint(origin=origin, size=int(size_text), root=root, signed_at=signed_at), body, sigs


def verify(note: str, public_key: Ed25519PublicKey, *, name: str = KEY_NAME, origin: str | None = None) -> Checkpoint:
    """The checkpoint if ``public_key`` signed it (and it names ``origin``, when given)."""
    checkpoint, body, sigs = parse(note)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointInvalid(f"checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    expected_id = key_id(name, public_key)
    for signer, blob in sigs:
        if signer == name and blob[:4] == expected_id and len(blob) == 68:
            try:
                public_key.verify(blob[4:], body.encode())
            except InvalidSignature:
                raise CheckpointInvalid("the signature does not match the checkpoint") from None
            return checkpoint
    raise CheckpointInvalid(f"no signature by {name} with this key")

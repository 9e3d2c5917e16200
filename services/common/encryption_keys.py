"""X25519 key pairs for encryption to a party (agencies: their push notifications, docs/push.md).

Kept next to the party's Ed25519 signing key pair and made the same way:
``<private_dir>/<party>.x25519.key`` (PKCS#8 PEM, 0600) and
``<public_dir>/<party>.x25519.pub`` (SubjectPublicKeyInfo PEM). A signing key
is never used to encrypt, nor an encryption key to sign.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

SUFFIX = ".x25519"


def encryption_key_paths(private_dir: Path, public_dir: Path, party: str) -> tuple[Path, Path]:
    return private_dir / f"{party}{SUFFIX}.key", public_dir / f"{party}{SUFFIX}.pub"


def generate_encryption_key_pair(private_dir: Path, public_dir: Path, party: str) -> Path:
    """Create the party's X25519 key pair unless it exists; the private key's path."""
    private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = encryption_key_paths(private_dir, public_dir, party)
    if not private_path.exists() or not public_path.exists():
        key = X25519PrivateKey.generate()
        private_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        private_path.chmod(0o600)
        public_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private_path


def load_encryption_private_key(path: Path) -> X25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{path} is not an X25519 private key")
    return key


class EncryptionKeyRing:
    """Public encryption keys of the parties, read from ``<keys_dir>/<party>.x25519.pub``; a file replaced (a new key) is read again."""

    def __init__(self, keys_dir: Path):
        self._dir = keys_dir
        self._cache: dict[str, tuple[float, X25519PublicKey]] = {}

    def key_for(self, party: str) -> X25519PublicKey | None:
        if not party or party.startswith(".") or not all(c.isalnum() or c in "-_." for c in party):
            return None
        path = self._dir / f"{party}{SUFFIX}.pub"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        kept = self._cache.get(party)
        if kept is not None and kept[0] == mtime:
            return kept[1]
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, X25519PublicKey):
            return None
        self._cache[party] = (mtime, key)
        return key

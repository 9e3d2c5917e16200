"""Per-agency pseudonyms (機関別符号, R-OWN-2): pure, no I/O.

An agency whose affair does not need the resident code sees, instead, a
pseudonym that is stable for that agency and useless to any other:

    key_agency = HKDF-SHA256(master, salt="jukinet-pseudonym-v1", info=agency id, 64 bytes)
    pseudonym  = "p1" + base32(AES-SIV(key_agency).encrypt(resident code, [agency id]))

AES-SIV is deterministic authenticated encryption, so the same person always
gets the same pseudonym for the same agency, and only the national server —
the only holder of the master key — can turn it back into a resident code.
A pseudonym presented by another agency fails authentication under that
agency's key and resolves to nothing. No mapping table exists that could be
joined. Rotation: a new master key (a new ``p<n>`` prefix) re-issues every
pseudonym; see docs/pseudonyms.md.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "p1"
_SALT = b"jukinet-pseudonym-v1"
MASTER_KEY_BYTES = 64


class Pseudonymizer:
    def __init__(self, master_key: bytes):
        if len(master_key) < 32:
            raise ValueError("the pseudonym master key must have at least 32 bytes")
        self._master = master_key
        self._ciphers: dict[str, AESSIV] = {}

    def _cipher(self, agency_id: str) -> AESSIV:
        cipher = self._ciphers.get(agency_id)
        if cipher is None:
            key = HKDF(algorithm=hashes.SHA256(), length=64, salt=_SALT, info=agency_id.encode()).derive(self._master)
            cipher = self._ciphers[agency_id] = AESSIV(key)
        return cipher

    def pseudonym(self, agency_id: str, resident_code: str) -> str:
        sealed = self._cipher(agency_id).encrypt(resident_code.encode("ascii"), [agency_id.encode()])
        return PREFIX + base64.b32encode(sealed).decode("ascii").rstrip("=").lower()

    def resolve(self, agency_id: str, pseudonym: str) -> str | None:
        """The resident code behind an agency's own pseudonym, or None for anything else."""
        if not pseudonym.startswith(PREFIX):
            return None
        body = pseudonym[len(PREFIX):].upper()
        try:
            sealed = base64.b32decode(body + "=" * (-len(body) % 8))
            return self._cipher(agency_id).decrypt(sealed, [agency_id.encode()]).decode("ascii")
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None

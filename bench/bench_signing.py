"""What signing and checking every Kafka record costs, beside the same record's work without it.

Measured in-process on one CPU (``time.process_time``), in the same run:

- without: what a consumer already does with a record of an identity change
  (the contract's validation of the payload);
- with: the producer's signature, and the consumer's check (signature, age,
  entitlement from the topology) on top of it.

A change crosses two Kafka hops with the prefecture tier (CS → prefecture →
national) and one without, so the added CPU per change is the per-record
figure times the hops. The receipt each consumer keeps (one row per record,
in the transaction the record is applied in) is a database insert not
counted here; docs/security.md explains why it is there.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

from contracts.identity import IdentityChange
from services.common.entitlement import check_entitled
from services.common.message_signing import MessageSigner, RecordGate
from services.common.tokens import PublicKeyRing, generate_key_pair, load_private_key
from services.common.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
RECORDS = 5000


def _change() -> bytes:
    return IdentityChange.model_validate({
        "event_id": str(uuid.uuid4()), "resident_code": "12345678903", "version": 2, "municipality_code": "131016", "reason": "move_within",
        "change_date": date.today().isoformat(), "status": "active", "recorded_at": datetime.now(UTC).isoformat(),
        "identity": {"resident_code": "12345678903", "individual_number": "621498320257",
                     "name": {"family_name": "山田", "given_name": "花子", "family_name_kana": "ヤマダ", "given_name_kana": "ハナコ"},
                     "birth_date": "1990-04-01", "sex": "female", "address": {"municipality_code": "131016", "postal_code": "1000001", "text": "東京都千代田区千代田1-1"}},
    }).model_dump_json().encode()


def _cpu_per_record(work) -> float:
    started = time.process_time()
    for _ in range(RECORDS):
        work()
    return (time.process_time() - started) / RECORDS * 1e6


def main() -> dict:
    topology = load_topology(ROOT / "deploy" / "topology.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        key = load_private_key(generate_key_pair(Path(tmp) / "private", Path(tmp) / "public", "cs-131016"))
        signer = MessageSigner(key, "cs-131016")
        gate = RecordGate(PublicKeyRing(Path(tmp) / "public"), entitled=lambda s, t, k, p: check_entitled(topology, signer=s, topic=t, kind=k, payload=p),
                          max_age_seconds=7 * 24 * 3600.0)
        value, topic, record_key = _change(), "jukinet.pref.13.identity", b"12345678903"
        headers = signer.headers(topic=topic, key=record_key, kind="identity-change", value=value)
        record = SimpleNamespace(topic=topic, key=record_key, value=value, headers=[(k, v.encode()) for k, v in headers.items()] + [("jukinet-kind", b"identity-change")])
        validate = _cpu_per_record(lambda: IdentityChange.model_validate_json(value))
        sign = _cpu_per_record(lambda: signer.headers(topic=topic, key=record_key, kind="identity-change", value=value))
        check = _cpu_per_record(lambda: gate.admit(record))
    per_hop = sign + check
    return {
        "records measured": RECORDS,
        "record size (bytes)": len(value),
        "without: contract validation of a record (µs CPU)": validate,
        "sign a record, producer (µs CPU)": sign,
        "check a record: signature, age, entitlement (µs CPU)": check,
        "added per record, both sides (µs CPU)": per_hop,
        "added per change with the prefecture tier, 2 hops (ms CPU)": 2 * per_hop / 1000,
        "added per change without it, 1 hop (ms CPU)": per_hop / 1000,
        "notes": [
            "Compare the added milliseconds with the CPU per change of the moves benchmark (about 39 ms summed over all processes, issue 19): "
            f"{2 * per_hop / 1000:.2f} ms is {2 * per_hop / 1000 / 39 * 100:.1f} % of it; the limit set for this is 15 %.",
            "Not counted: each consumer's receipt row (one insert per record, in the transaction that applies it).",
        ],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, ensure_ascii=False))

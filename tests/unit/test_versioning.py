"""Per-person version rules every tier applies (services/common/versioning.py)."""

from __future__ import annotations

import pytest

from services.common.versioning import Decision, decide

E1 = "2b1f6c2e-8d4e-4c3a-9a57-6f1d2f0e9b11"
E2 = "5c0e8f7a-1b2d-4e3f-8a9b-0c1d2e3f4a5b"


def test_first_version_of_an_unknown_person_is_applied():
    assert decide(held_version=None, held_event_id_for_version=None, incoming_version=1, incoming_event_id=E1) is Decision.apply


@pytest.mark.parametrize("held", [1, 2, 41])
def test_next_version_is_applied(held):
    assert decide(held_version=held, held_event_id_for_version=None, incoming_version=held + 1, incoming_event_id=E1) is Decision.apply


@pytest.mark.parametrize("held, incoming", [(1, 1), (5, 5), (5, 3)])
def test_redelivery_of_the_same_event_is_a_duplicate(held, incoming):
    assert decide(held_version=held, held_event_id_for_version=E1, incoming_version=incoming, incoming_event_id=E1) is Decision.duplicate


@pytest.mark.parametrize("held, incoming", [(1, 1), (5, 5), (5, 3)])
def test_another_event_for_a_held_version_is_a_conflict(held, incoming):
    assert decide(held_version=held, held_event_id_for_version=E2, incoming_version=incoming, incoming_event_id=E1) is Decision.conflict


def test_held_version_without_a_recorded_event_is_treated_as_duplicate():
    # nothing to compare against (e.g. history not kept for that version): never re-applied
    assert decide(held_version=3, held_event_id_for_version=None, incoming_version=2, incoming_event_id=E1) is Decision.duplicate


@pytest.mark.parametrize("held, incoming", [(None, 2), (None, 7), (1, 3), (4, 10)])
def test_skipped_versions_are_a_gap(held, incoming):
    assert decide(held_version=held, held_event_id_for_version=None, incoming_version=incoming, incoming_event_id=E1) is Decision.gap


def test_held_version_zero_is_the_same_as_none():
    for incoming, expected in ((1, Decision.apply), (2, Decision.gap)):
        assert decide(held_version=0, held_event_id_for_version=None, incoming_version=incoming, incoming_event_id=E1) is expected


def test_out_of_order_delivery_sequence():
    """Versions 1, 3, 2 arrive in that order: 3 is held as a gap until 2 is applied."""
    held = None
    log = []
    recorded: dict[int, str] = {}
    for version in (1, 3, 2, 3):
        event = f"event-{version}"
        decision = decide(held_version=held, held_event_id_for_version=recorded.get(version), incoming_version=version, incoming_event_id=event)
        log.append(decision)
        if decision is Decision.apply:
            held = version
            recorded[version] = event
    assert log == [Decision.apply, Decision.gap, Decision.apply, Decision.apply]
    assert held == 3

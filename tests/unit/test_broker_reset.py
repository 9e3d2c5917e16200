"""A producer notices a broker that came back without its log (R-OPS-1: nothing lost)."""

from services.common.kafka import Producer


def _producer_hearing() -> tuple[Producer, list[str]]:
    producer = Producer("127.0.0.1:1")  # never started: only the acknowledgement bookkeeping is exercised
    heard: list[str] = []
    producer.on_log_reset(heard.append)
    return producer, heard


def test_offsets_that_only_grow_are_no_reset():
    producer, heard = _producer_hearing()
    for offset in (0, 1, 2, 2, 7):  # the same offset again: a re-acknowledged batch, not a reset
        producer._acknowledged_at("jukinet.provisions", 0, offset)
    producer._acknowledged_at("jukinet.provisions", 1, 0)  # another partition starts at its own zero
    assert heard == []


def test_an_offset_going_back_announces_every_topic_written_to_once():
    producer, heard = _producer_hearing()
    for offset in (40, 41, 42):
        producer._acknowledged_at("jukinet.provisions", 2, offset)
    producer._acknowledged_at("jukinet.national.identity", 0, 9)
    producer._acknowledged_at("jukinet.provisions", 2, 0)  # the broker restarted empty
    assert heard == ["jukinet.national.identity", "jukinet.provisions"]  # the identity topic lost its log too
    for offset in (1, 2, 3):  # the new logs grow from there: no further alarm
        producer._acknowledged_at("jukinet.provisions", 2, offset)
    producer._acknowledged_at("jukinet.national.identity", 0, 0)  # first record of its new log, not a second reset
    assert heard == ["jukinet.national.identity", "jukinet.provisions"]


def test_another_record_at_the_last_offset_is_a_reset_the_same_record_is_not():
    """A partition written once before the broker restarted empty: its new log's first record is at 0
    again, which an offset alone cannot tell from the old one; the record's fingerprint can."""
    producer, heard = _producer_hearing()
    producer._acknowledged_at("jukinet.provisions", 1, 0, "record-a")
    producer._acknowledged_at("jukinet.provisions", 1, 0, "record-a")  # the same record acknowledged again
    assert heard == []
    producer._acknowledged_at("jukinet.provisions", 1, 0, "record-b")  # another record where record-a was
    assert heard == ["jukinet.provisions"]

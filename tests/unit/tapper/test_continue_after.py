"""Where a volume's sequence goes on after a start or a Kafka failure."""

from tapstream.tapper.publish import continue_after


def test_kafka_level_with_what_was_acked_continues_there() -> None:
    assert continue_after(40, 40) == (40, False)
    assert continue_after(0, 0) == (0, False)


def test_kafka_ahead_of_the_saved_floor_continues_after_kafka() -> None:
    # The floor is saved every few seconds; Kafka is the truth when it holds more.
    assert continue_after(45, 40) == (45, False)


def test_kafka_behind_what_it_acked_never_reuses_a_seq_and_resends_everything() -> None:
    # Events 31..40 were acked and lost: a consumer that applied them would skip new 31..40.
    assert continue_after(30, 40) == (40, True)
    assert continue_after(0, 40) == (40, True)  # topic recreated

"""What the VDSA's applier and the reverse applier share: keys and the halt of an undecodable record."""

from tapstream.core.contract import Cursor
from tapstream.core.dlq import Poison, PoisonReason
from tapstream.vdsa.stream import undecodable, volume_key


def test_a_key_names_a_volume_only_when_it_is_a_valid_name() -> None:
    assert volume_key(b"disk0") == "disk0"
    assert volume_key(b"../etc") is None
    assert volume_key(b"\xff") is None
    assert volume_key(None) is None


def test_an_undecodable_record_halts_its_volume_at_the_next_event() -> None:
    halt = undecodable(
        "t", 2, 41, Poison(PoisonReason.UNDECODABLE, "bad magic"), Cursor("disk0", 7, [], None)
    )
    assert (halt.reason, halt.detail, halt.seq) == ("undecodable", "t[2]@41: bad magic", 8)

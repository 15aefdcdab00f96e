from tapstream.journal.restore import _missing


def test_missing_ranges_are_named() -> None:
    assert _missing(40, 50, [41, 45, 46, 47, 48, 49]) == "42-44, 50"
    assert _missing(0, 3, []) == "1-3"
    assert _missing(0, 20, [2, 4, 6, 8], shown=2) == "1, 3, ..."

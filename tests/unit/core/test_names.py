import pytest

from tapstream.core.names import valid_name


@pytest.mark.parametrize("name", ["disk0", "vm1-disk0", "a.b_c", "G1", "x" * 128])
def test_valid(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name", ["", "../etc", "a/b", "..", ".hidden", "-x", "a..b", "x" * 129, "a b", None, 3]
)
def test_invalid(name: object) -> None:
    assert not valid_name(name)

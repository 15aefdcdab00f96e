from pathlib import Path

import pytest

from tapstream.core.names import InvalidName, check_name, valid_name
from tapstream.core.replica import Replica


@pytest.mark.parametrize("name", ["disk0", "vm1-disk0", "a.b_c", "G1", "x" * 128])
def test_valid(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name", ["", "../etc", "a/b", "..", ".hidden", "-x", "a..b", "x" * 129, "a b", None, 3]
)
def test_invalid(name: object) -> None:
    assert not valid_name(name)


def test_check_name_says_what_a_name_may_hold() -> None:
    assert check_name("volume", "disk0") == "disk0"
    with pytest.raises(InvalidName, match=r"volume name '\.\./\.\./etc/x'.*without '\.\.'"):
        check_name("volume", "../../etc/x")


@pytest.mark.parametrize(("group", "volume"), [("g", "../../etc/x"), ("../g", "d"), ("g", "a/b")])
def test_a_replica_is_never_built_from_an_invalid_name(
    tmp_path: Path, group: str, volume: str
) -> None:
    with pytest.raises(InvalidName):
        Replica(tmp_path / "replicas", group, volume)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["disk0", "a\n", "a..b", "-x"])
def test_the_pattern_for_schemas_agrees_with_valid_name(name: str) -> None:
    from pydantic import TypeAdapter, ValidationError, constr

    from tapstream.core.names import NAME_PATTERN

    adapter = TypeAdapter(constr(pattern=NAME_PATTERN))
    try:
        adapter.validate_python(name)
        matched = ".." not in name  # the pattern leaves '..' to be refused apart
    except ValidationError:
        matched = False
    assert matched == valid_name(name)

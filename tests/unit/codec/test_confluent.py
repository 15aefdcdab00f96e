"""Confluent wire format against a small real registry: ids cached, errors told apart.

Bytes naming an unknown id are bad bytes (DecodeError, a consumer may skip them); a registry that
is down or slow is RegistryUnavailable (a consumer must NOT skip: the record may be fine).
"""

from __future__ import annotations

import pytest

from tapstream.core.codec import (
    DecodeError,
    RegistryError,
    RegistryUnavailable,
    decode_any,
    make_codec,
)
from tapstream.core.settings import TapstreamSettings

from .conftest import Registry
from .samples import SAMPLES

COMMAND = SAMPLES["Command"][1]


def codec_for(url: str, timeout_s: float = 5.0):
    return make_codec(
        TapstreamSettings(schema_registry_url=url, schema_registry_timeout_s=timeout_s)
    )


def test_ids_are_cached_both_ways(registry: Registry) -> None:
    writer, reader = codec_for(registry.url), codec_for(registry.url)
    encoded = [writer.encode("Command", {**COMMAND, "id": str(i)}) for i in range(20)]
    assert [reader.decode(e)[1]["id"] for e in encoded] == [str(i) for i in range(20)]
    assert registry.count("POST", "/subjects/io.tapstream.Command/versions") == 1
    assert registry.count("GET", "/schemas/ids/1") == 1


def test_an_id_the_registry_does_not_know_is_a_decode_error(registry: Registry) -> None:
    with pytest.raises(DecodeError, match="schema id 99 is unknown"):
        codec_for(registry.url).decode(b"\x00\x00\x00\x00\x63" + b"\x02")


def test_an_id_of_a_foreign_schema_is_a_decode_error(registry: Registry) -> None:
    registry.schemas.append('{"type": "record", "name": "com.acme.Order", "fields": []}')
    with pytest.raises(DecodeError, match=r"com\.acme\.Order"):
        codec_for(registry.url).decode(b"\x00\x00\x00\x00\x01")


@pytest.mark.timeout(30)  # a hang fails here instead of blocking the suite
def test_registry_refusing_connections_fails_fast_on_encode(closed_port: int) -> None:
    codec = codec_for(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(
        RegistryUnavailable, match=rf"127\.0\.0\.1:{closed_port} did not answer \(ConnectError"
    ):
        codec.encode("Command", COMMAND)


@pytest.mark.timeout(30)
def test_a_registry_that_never_answers_times_out(silent_registry: str) -> None:
    codec = codec_for(silent_registry, timeout_s=0.2)
    with pytest.raises(RegistryUnavailable, match="ReadTimeout"):
        codec.encode("Command", COMMAND)
    with pytest.raises(RegistryUnavailable, match="ReadTimeout"):  # and decode is no DecodeError
        codec.decode(b"\x00\x00\x00\x00\x01\x02")


@pytest.mark.timeout(30)
def test_registry_down_while_decoding_is_not_a_decode_error(
    registry: Registry, closed_port: int
) -> None:
    encoded = codec_for(registry.url).encode("Command", COMMAND)
    with pytest.raises(RegistryUnavailable) as err:
        codec_for(f"http://127.0.0.1:{closed_port}").decode(encoded)
    assert not isinstance(
        err.value, DecodeError
    )  # consumers skip DecodeErrors: this must not be skipped


def test_a_registry_answering_5xx_is_unavailable_and_4xx_is_an_error(registry: Registry) -> None:
    registry.fail_with = 503
    with pytest.raises(RegistryUnavailable, match="503"):
        codec_for(registry.url).encode("Command", COMMAND)
    registry.fail_with = 409  # e.g. an incompatible schema
    with pytest.raises(RegistryError, match="409") as err:
        codec_for(registry.url).encode("Command", COMMAND)
    assert not isinstance(err.value, RegistryUnavailable)


def test_a_failed_registration_is_retried_on_the_next_encode(registry: Registry) -> None:
    codec = codec_for(registry.url)
    registry.fail_with = 503
    with pytest.raises(RegistryUnavailable):
        codec.encode("Command", COMMAND)
    registry.fail_with = None
    assert codec.decode(codec.encode("Command", COMMAND)) == ("Command", COMMAND)


def test_credentials_in_the_url_never_reach_messages(closed_port: int) -> None:
    codec = codec_for(f"http://tap:s3cret@127.0.0.1:{closed_port}")
    with pytest.raises(RegistryUnavailable) as err:
        codec.encode("Command", COMMAND)
    assert "s3cret" not in str(err.value) and f"127.0.0.1:{closed_port}" in str(err.value)


def test_decode_any_picks_the_encoding_by_first_byte_and_caches(registry: Registry) -> None:
    single = make_codec(TapstreamSettings()).encode("Command", COMMAND)
    settings = TapstreamSettings(schema_registry_url=registry.url)
    confluent = codec_for(registry.url).encode("Command", COMMAND)
    assert decode_any(single) == ("Command", COMMAND)
    assert decode_any(single, settings) == ("Command", COMMAND)
    for _ in range(5):
        assert decode_any(confluent, settings) == ("Command", COMMAND)
    assert registry.count("GET", "/schemas/ids/") == 1  # tail does not ask per record
    with pytest.raises(DecodeError, match="TAPSTREAM_SCHEMA_REGISTRY_URL"):
        decode_any(confluent)

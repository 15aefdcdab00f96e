"""The compiled data path (services/tapper/native) writes the same DiskEvent bytes as fast_write.py,
and its lane keeps seq and flags as the Python side expects. No broker: librdkafka only queues."""

from __future__ import annotations

import os
import random

import pytest

from tapstream.core.codec import make_codec
from tapstream.core.codec.fast_write import DataEncoder
from tapstream.core.settings import TapstreamSettings
from tapstream.tapper import native


@pytest.fixture(scope="module")
def lane_and_encoder(tmp_path_factory):
    # CI builds the module in `make setup`; a missing build must fail here, not skip
    assert native.available(), "tapstream_native is not built: run `make setup` (needs cargo)"
    codec = make_codec(TapstreamSettings())
    enc = DataEncoder.learn(codec.encode, "vol-é", "host-1", "group-1")
    core = native.NativeCore({"bootstrap.servers": "127.0.0.1:1", "enable.idempotence": True})
    disk = tmp_path_factory.mktemp("native") / "vol.img"
    disk.write_bytes(bytes(1 << 20))
    fd = os.open(disk, os.O_RDWR)
    lane = core.rs.lane(
        "t",
        b"vol-\xc3\xa9",
        enc._head,
        enc._write,
        enc._sync_block,
        fd,
        1 << 20,
        1 << 20,
        65536,
        15.0,
        41,
    )
    yield lane, enc
    os.close(fd)


def test_native_events_equal_fast_write_bytes(lane_and_encoder) -> None:
    lane, enc = lane_and_encoder
    rng = random.Random(7)
    for _ in range(200):
        n = rng.choice([0, 1, 511, 4096, 65536, rng.randrange(1, 200_000)])
        data = rng.randbytes(n)
        seq, ts, off = rng.randrange(1, 1 << 40), rng.randrange(1 << 52), rng.randrange(1 << 40)
        sync_id = rng.choice([None, "s-1", "é" * 3])
        assert lane.encode_for_test(seq, ts, off, data, sync_id) == enc.encode(
            seq, ts, off, data, None, sync_id
        )


def test_lane_seq_flags_and_hold(lane_and_encoder) -> None:
    lane, _ = lane_and_encoder
    assert (lane.seq, lane.acked_seq) == (41, 41)
    assert lane.publish_data(0, b"x" * 10, 1) == 42  # queued in librdkafka (no broker needed)
    assert lane.publish(lambda seq, ts: b"event %d" % seq, 2) == 43
    assert lane.outstanding == 2 and lane.outstanding_bytes > 0
    with pytest.raises(ZeroDivisionError):  # an encoder's error leaves no gap in the seq
        lane.publish(lambda seq, ts: 1 / 0, 3)
    assert lane.seq == 43
    lane.set_flag(native._rs.FENCED, True)
    assert lane.flags == native._rs.FENCED
    lane.set_flag(native._rs.FENCED, False)
    assert lane.flags == 0
    lane.restart_at(100)
    assert (lane.seq, lane.acked_seq) == (100, 100)


def test_a_sync_block_is_read_from_the_volume_under_the_lane(lane_and_encoder) -> None:
    lane, _ = lane_and_encoder
    seq = lane.seq
    assert lane.publish_block(0, 4096, 7, "s-1", True) is None  # all zeroes: INITIAL skips them
    assert lane.seq == seq
    assert lane.publish_block(0, 4096, 8, "s-1", False) == seq + 1  # a DELTA sends them
    with pytest.raises(OSError):  # past the end of the volume: a short read is EIO
        lane.publish_block((1 << 20) - 10, 4096, 9, "s-1", False)
    assert lane.seq == seq + 1  # nothing sent, no seq taken


def test_producer_config_becomes_librdkafka_strings() -> None:
    conf = native.librdkafka_conf({"a": True, "b": False, "c": 2.5, "d": "x"})
    assert conf == [("a", "true"), ("b", "false"), ("c", "2.5"), ("d", "x")]
    with pytest.raises(ValueError):
        native.librdkafka_conf({"error_cb": print})

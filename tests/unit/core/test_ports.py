import socket

from tapstream.core.ports import ephemeral_low, free_port


def test_ports_are_free_and_below_the_ephemeral_range() -> None:
    low = ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # really free


def test_a_listening_port_is_never_handed_out(monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        monkeypatch.setattr("tapstream.core.ports.random.randint", lambda a, b: taken)
        try:
            free_port(tries=3)
        except RuntimeError as exc:
            assert "no free port" in str(exc)
        else:
            raise AssertionError("a port in use was returned")

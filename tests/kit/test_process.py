"""kit.process.free_ports: ports outside the kernel's ephemeral range, never handed out twice."""
import socket

from kit import process
from kit.process import free_ports


def ephemeral_low() -> int:
    return int(process._PORT_RANGE_FILE.read_text().split()[0])


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = free_ports(6)
    assert len(set(ports)) == 6
    assert all(1024 <= port < ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))


def test_a_port_is_not_handed_out_again_by_the_same_process():
    # 2,000 ports in 40 calls: drawn at random from ~16,000 without that memory, some would repeat.
    ports = [port for _ in range(40) for port in free_ports(50)]
    assert len(set(ports)) == len(ports)


def test_a_port_with_a_listener_is_not_bindable():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not process._bindable(listener.getsockname()[1])


def test_without_a_known_range_the_os_chooses(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "_PORT_RANGE_FILE", tmp_path / "missing")
    ports = free_ports(3)
    assert len(set(ports)) == 3 and all(port > 0 for port in ports)

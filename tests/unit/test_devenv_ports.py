"""The ports the test servers get are free and out of the way of the ports Ray takes for itself."""

import socket

from devenv._process import LOOPBACK, _ephemeral_ports, free_ports


def test_free_ports_are_distinct_bindable_and_outside_the_kernels_ephemeral_range() -> None:
    # Ray binds port 0 and connects out from the ephemeral range: a port from there can be gone
    # by the time our server binds it (a CI failure: the Ray driver's gRPC server took it).
    ports = free_ports(4)

    assert len(set(ports)) == 4
    assert not set(ports) & set(_ephemeral_ports())
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, port))

"""free_port: ports that nothing else on the machine can take before their user binds them."""

from __future__ import annotations

import socket

from raylife import cluster


def test_chosen_ports_lie_below_the_kernels_ephemeral_range_and_never_repeat():
    # An outgoing connection takes its local port from the ephemeral range; a port chosen there
    # and bound later (HAProxy's listeners, a Serve proxy) can be taken in between.
    low, _ = cluster._ephemeral_range()
    ports = [cluster.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(cluster._CHOSEN_PORTS_FROM <= port < low for port in ports), ports


def test_a_chosen_port_binds_on_every_interface():
    port = cluster.free_port()
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", port))  # as HAProxy binds `:port`
        sock.listen()


def test_a_port_in_use_is_never_chosen(monkeypatch):
    held = socket.socket()
    held.bind(("0.0.0.0", cluster.free_port()))
    held.listen()
    taken = held.getsockname()[1]
    import random

    real_choice = random.choice
    offered: list[int] = []

    def taken_twice_first(candidates):
        offered.append(taken if len(offered) < 2 else real_choice(candidates))
        return offered[-1]

    monkeypatch.setattr("random.choice", taken_twice_first)
    try:
        assert cluster.free_port() != taken
        assert offered[:2] == [taken, taken]
    finally:
        held.close()

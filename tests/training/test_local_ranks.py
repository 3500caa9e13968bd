"""The ports that servers started by another process (a gloo world's store, a Ray head, Label
Studio) are handed: ones no other process is handed meanwhile."""

import random
import socket

from training import local_ranks
from training.local_ranks import free_port


def test_a_free_port_lies_below_the_ports_the_kernel_hands_out_itself_and_can_be_bound():
    low = local_ranks._ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert local_ranks._NAMED_PORTS_FROM <= port < low
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
            server.listen()


def test_a_seeded_random_module_does_not_make_two_processes_draw_the_same_ports():
    random.seed(0)
    first = [free_port() for _ in range(5)]
    random.seed(0)
    assert [free_port() for _ in range(5)] != first


def test_a_port_someone_listens_on_is_never_handed_out(monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        class DrawsTheTakenPortFirst:
            draws = 0

            def randrange(self, start, stop):
                self.draws += 1
                return port if self.draws < 10 else start

        monkeypatch.setattr(local_ranks.random, "SystemRandom", DrawsTheTakenPortFirst)
        monkeypatch.setattr(local_ranks, "_ephemeral_low", lambda: 65536)
        assert free_port() != port


def test_without_room_below_the_ephemeral_range_the_kernel_chooses(monkeypatch):
    monkeypatch.setattr(local_ranks, "_ephemeral_low", lambda: 1024)
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))

"""Finding the host: --connect values, the default port, and falling back from it."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest
from procs import ProcPool, after_looking, start_host, start_join, wait_session

from p2pchat.config import DEFAULT_PORT
from p2pchat.errors import ConfigError
from p2pchat.net.dial import Attempt, async_race, describe_failure, rank
from p2pchat.room.link import parse_connect


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:4000", ("127.0.0.1", 4000)),
        ("127.0.0.1", ("127.0.0.1", DEFAULT_PORT)),
        ("bob-laptop.local", ("bob-laptop.local", DEFAULT_PORT)),
        ("bob-laptop.local:9", ("bob-laptop.local", 9)),
        ("[::1]:4000", ("::1", 4000)),
        ("[::1]", ("::1", DEFAULT_PORT)),
        ("::1", ("::1", DEFAULT_PORT)),
        ("fe80::1%eth0", ("fe80::1%eth0", DEFAULT_PORT)),
        ("[fe80::1%eth0]:4000", ("fe80::1%eth0", 4000)),
        (" 10.0.0.2:1 ", ("10.0.0.2", 1)),
    ],
)
def test_connect_values(value: str, expected: tuple[str, int]) -> None:
    assert parse_connect(value) == expected


@pytest.mark.parametrize("value", ["", ":80", "h:0", "h:65536", "h:x", "[::1", "[::1]4000", "[]:1"])
def test_bad_connect_values(value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape("ADDR[:PORT]")):
        parse_connect(value)


def _default_port_free() -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the relay does
        try:
            s.bind(("127.0.0.1", DEFAULT_PORT))
        except OSError:
            return False
    return True


def test_the_host_takes_the_default_port_and_join_needs_no_port(procs: ProcPool) -> None:
    if not _default_port_free():
        pytest.skip(f"port {DEFAULT_PORT} is held by another program on this machine")
    bob, port = start_host(procs, procs.home("bob"))
    assert port == DEFAULT_PORT
    alice = start_join(procs, procs.home("alice"), "--connect", "127.0.0.1")
    wait_session(alice, "bob")
    alice.send_line("no port typed")
    bob.wait_for_line("stdout", "^alice: no port typed$")


def test_a_taken_default_port_falls_back_to_a_free_one(procs: ProcPool) -> None:
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("0.0.0.0", DEFAULT_PORT))
        except OSError:
            pytest.skip(f"port {DEFAULT_PORT} is held by another program on this machine")
        blocker.listen()
        _bob, port = start_host(procs, procs.home("bob"))
        assert port != DEFAULT_PORT
        alice = start_join(procs, procs.home("alice"), "--connect", f"127.0.0.1:{port}")
        wait_session(alice, "bob")


def test_an_explicit_port_that_is_taken_is_an_error(procs: ProcPool) -> None:
    from procs import run_p2pchat

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        result = run_p2pchat(
            "host",
            "--name",
            "bob",
            "--home",
            procs.home("bob"),
            "--interface",
            "127.0.0.1",
            "--port",
            str(taken),
        )
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines() == [
        f"p2pchat: error: cannot listen on 127.0.0.1 port {taken}: "
        + result.stderr.split(f"port {taken}: ", 1)[1].strip()
    ]


# ---------------------------------------------------------------- ranking and racing

NETS = [ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("fd00:77::/64")]


def test_own_subnets_first_then_ipv4_then_ipv6_and_no_unscoped_link_local() -> None:
    got = rank(
        [
            ("172.17.0.1", 1),  # docker0 of the host: not ours
            ("fe80::1", 1),  # link-local without a scope: cannot be used
            ("2001:db8::5", 1),
            ("fe80::2%eth0", 1),
            ("192.168.1.20", 1),  # our Wi-Fi
            ("fd00:77::9", 1),  # ours too
            ("bob.local", 1),
            ("192.168.1.20", 1),  # duplicate
        ],
        NETS,
    )
    assert got == [
        ("192.168.1.20", 1),
        ("fd00:77::9", 1),
        ("172.17.0.1", 1),
        ("2001:db8::5", 1),
        ("fe80::2%eth0", 1),
        ("bob.local", 1),
    ]


async def test_a_refused_address_does_not_delay_the_next() -> None:
    import asyncio

    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    open_port = server.sockets[0].getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        # a long stagger: the second attempt must start when the first fails, not after it
        winner, failed = await async_race(
            [("127.0.0.1", closed_port), ("127.0.0.1", open_port)], 10.0, stagger=5.0
        )
        assert loop.time() - start < 5.0
        assert winner is not None and (winner.address, winner.port) == ("127.0.0.1", open_port)
        winner.streams[1].close()
        assert failed == [Attempt("127.0.0.1", closed_port, "refused")]
        winner, failed = await async_race([("127.0.0.1", closed_port)], 1.0)
        assert winner is None and [a.outcome for a in failed] == ["refused"]
    finally:
        server.close()
        await server.wait_closed()


def test_failures_are_said_by_phase() -> None:
    timed_out = [Attempt("10.0.0.5", 47474, "timed out")]
    assert describe_failure(timed_out, "bob") == (
        "found bob, but its port does not answer: a firewall on that machine? "
        "(10.0.0.5:47474 timed out)"
    )
    refused = [Attempt("::1", 1, "refused")]
    assert describe_failure(refused, None) == (
        "nothing listens there: is p2pchat host still running? ([::1]:1 refused)"
    )
    assert "not reachable from this network" in describe_failure(
        [Attempt("10.0.0.5", 1, "unreachable"), Attempt("10.0.0.6", 1, "timed out")], "bob"
    )


def test_discover_finding_nothing_exits_2_with_one_line(
    private_lo: list[str], procs: ProcPool
) -> None:
    """In a namespace of its own (root) nothing is advertised; on the shared
    loopback another host could be, so the test needs the namespace."""
    if not private_lo:
        pytest.skip("needs root: a loopback of its own, where no host is advertised")
    from procs import Proc, base_env, p2pchat_cmd

    for extra in ([], ["--json"]):
        proc = Proc(
            [
                *private_lo,
                *p2pchat_cmd(
                    "discover",
                    "--home",
                    procs.home("a"),
                    "--interface",
                    "127.0.0.1",
                    "--timeout",
                    "0.5",
                    *extra,
                ),
            ],
            env=base_env(),
        )
        procs.procs.append(proc)
        assert proc.wait(20) == 2, proc.describe()
        assert proc.stdout == []
        assert proc.stderr == [
            "p2pchat: no p2pchat host found within 0.5 s: no mDNS answer of any kind was "
            "heard on 127.0.0.1: multicast is blocked (client isolation, guest Wi-Fi, a "
            "firewall on UDP 5353), or nobody else is on this network"
        ]


def test_a_name_not_found_lists_the_hosts_seen(private_lo: list[str], procs: ProcPool) -> None:
    if not private_lo:
        pytest.skip("needs root: a loopback of its own, with only our host on it")
    from procs import (
        Proc,
        base_env,
        p2pchat_cmd,
        run_p2pchat,  # noqa: F401  (the one-shot runner has no prefix)
    )

    start_host(procs, procs.home("bob"), prefix=private_lo)
    proc = Proc(
        [*private_lo, *p2pchat_cmd("join", "carol", "--home", procs.home("alice"),
                                   "--interface", "127.0.0.1", "--timeout", "2")],
        env=base_env(),
    )  # fmt: skip
    procs.procs.append(proc)
    assert proc.wait(20) == 2, proc.describe()
    assert after_looking(proc.stderr, "carol", "2") == [
        "p2pchat: no host named 'carol' found within 2 s; hosts seen: bob"
    ]


def test_a_machine_with_only_loopback_hosts_on_loopback(
    private_lo: list[str], procs: ProcPool
) -> None:
    """No --interface, nothing but lo: the host advertises 127.0.0.1 (it used
    to exit 2, "no IP address to advertise") and a joiner finds it by name."""
    if not private_lo:
        pytest.skip("needs root: a namespace with nothing but loopback")
    bob, _ = start_host(procs, procs.home("bob"), interface=(), prefix=private_lo)
    line = next(ln for ln in bob.stderr if "advertised at" in ln)
    assert "advertised at 127.0.0.1" in line, line
    alice = start_join(procs, procs.home("alice"), "bob", interface=(), prefix=private_lo)
    wait_session(alice, "bob")


def test_an_advertisement_cannot_make_us_dial_without_end() -> None:
    from p2pchat.net.dial import MAX_CANDIDATES

    many = [(f"10.0.{i // 250}.{i % 250}", 1) for i in range(1000)]
    assert len(rank(many, NETS)) == MAX_CANDIDATES


def test_two_hosts_with_one_name(private_lo: list[str], procs: ProcPool) -> None:
    """Anyone can advertise any name: with two hosts called bob, a first
    contact by name picks neither, and a pinned bob is found by its key
    whichever of the two answers first."""
    if not private_lo:
        pytest.skip("needs root: a loopback of its own, with only our hosts on it")
    from procs import wait_session

    impostor, _ = start_host(procs, procs.home("mallory"), prefix=private_lo)
    real, port = start_host(procs, procs.home("bob"), "--port", "0", prefix=private_lo)
    first = procs.start(
        "join", "bob", "--home", procs.home("alice"), "--interface", "127.0.0.1",
        "--timeout", "3", name="join", prefix=private_lo,
    )  # fmt: skip
    assert first.wait(20) == 2, first.describe()
    assert after_looking(first.stderr, "bob", "3")[0] == (
        "p2pchat: 2 hosts are called 'bob' (anyone can advertise any name):"
    ), first.stderr
    # alice meets the real bob once, by address: pinned
    met = procs.start(
        "join", "--connect", f"127.0.0.1:{port}", "--home", procs.home("alice"),
        "--interface", "127.0.0.1", "--name", "alice", name="join", prefix=private_lo,
    )  # fmt: skip
    wait_session(met, "bob")
    met.close_stdin()
    assert met.wait(20) == 0, met.describe()
    # now by name: the pinned key decides, not who answers first
    again = procs.start(
        "join", "bob", "--home", procs.home("alice"), "--interface", "127.0.0.1",
        "--name", "alice", name="join", prefix=private_lo,
    )  # fmt: skip
    wait_session(again, "bob")
    again.wait_for_line("stderr", rf"^p2pchat: connected to 127\.0\.0\.1:{port}$")
    again.close_stdin()
    assert again.wait(20) == 0, again.describe()
    for host in (impostor, real):
        host.terminate()


def test_the_picker_takes_a_number_a_unique_name_or_a_fingerprint_start() -> None:
    from p2pchat.faces.chat import pick_host
    from p2pchat.room import HostInfo, format_fingerprint

    def host(name: str, fp: bytes) -> HostInfo:
        return HostInfo(f"{name}._p2pchat._tcp.local.", name, fp, 1, ("10.0.0.1",), 47474)

    bob1, bob2, carol = host("bob", b"\x01" * 32), host("bob", b"\x02" * 32), host("carol", None)
    hosts = [bob1, bob2, carol]
    assert pick_host(hosts, "2") is bob2
    assert pick_host(hosts, " carol ") is carol
    assert (
        pick_host(hosts, "bob") == "2 hosts are called 'bob': type the number of the one you "
        "mean, or the start of its fingerprint"
    )
    start = format_fingerprint(bob2.fingerprint or b"")[:9].lower()  # "AIBA-EAQC" as typed
    assert pick_host(hosts, start) is bob2
    assert pick_host(hosts, "4") == "there is no host number 4"
    assert pick_host(hosts, "ZZZZ") == "no host matches 'ZZZZ'"  # starts no fingerprint
    assert pick_host(hosts, "dave") == "no host matches 'dave'"

"""Tests for p2pchat.net.discovery: TXT records, interfaces, advertising and browsing.

Every zeroconf instance here is bound to 127.0.0.1 (the ``_loopback_only``
fixture enforces it), so no mDNS packet leaves the machine. Instance names
carry a random suffix so that tests never see each other's hosts.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from zeroconf import InterfaceChoice, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from p2pchat.config import MAX_NAME_BYTES, PROTOCOL_VERSION, SERVICE_TYPE
from p2pchat.errors import ConfigError
from p2pchat.net import discovery
from p2pchat.net.discovery import (
    Advertiser,
    HostInfo,
    async_browse,
    encode_txt,
    instance_label,
    interface_choice,
    parse_txt,
    resolve_interfaces,
)
from p2pchat.proto.keys import format_fingerprint

LO = ["127.0.0.1"]

pytestmark = pytest.mark.timeout(20)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[AsyncZeroconf]:
    """Refuse any zeroconf instance not bound to loopback; record the rest."""
    created: list[AsyncZeroconf] = []

    def guarded(*args: Any, **kwargs: Any) -> AsyncZeroconf:
        interfaces = kwargs.get("interfaces", args[0] if args else InterfaceChoice.All)
        assert interfaces == LO, f"zeroconf must be bound to 127.0.0.1, got {interfaces!r}"
        aiozc = AsyncZeroconf(*args, **kwargs)
        created.append(aiozc)
        return aiozc

    monkeypatch.setattr(discovery, "AsyncZeroconf", guarded)
    return created


def _unique(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def _instance(name: str, fingerprint: bytes | None = None) -> str:
    label = name if fingerprint is None else instance_label(name, fingerprint)
    return f"{label}.{SERVICE_TYPE}"


def _has(name: str) -> Callable[[HostInfo], bool]:
    return lambda host: host.name == name


@pytest.fixture
async def advertiser() -> AsyncIterator[Callable[..., Any]]:
    """A factory of started advertisers on loopback, all closed at the end."""
    started: list[Advertiser] = []

    async def start(name: str, **kwargs: Any) -> Advertiser:
        kwargs.setdefault("port", 40000 + int.from_bytes(os.urandom(2)) % 20000)
        kwargs.setdefault("fingerprint", os.urandom(32))
        kwargs.setdefault("addresses", LO)
        adv = Advertiser(name=name, interfaces=LO, **kwargs)
        started.append(adv)
        await adv.async_start()
        return adv

    yield start
    await asyncio.gather(*(adv.async_close() for adv in started))


# --------------------------------------------------------------------------- TXT


def _as_props(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def test_encode_txt_round_trips() -> None:
    fp = os.urandom(32)
    txt = encode_txt("Zoë 🐧", fp, PROTOCOL_VERSION)
    assert txt["v"] == str(PROTOCOL_VERSION)
    assert txt["fp"] == base64.b32encode(fp).decode().rstrip("=")
    assert len(txt["fp"]) == 52 and "-" not in txt["fp"]
    assert parse_txt(_as_props(txt)) == ("Zoë 🐧", fp, PROTOCOL_VERSION)


@pytest.mark.parametrize(
    ("name", "fp", "version"),
    [
        ("", bytes(32), 1),
        ("  ", bytes(32), 1),
        ("a\nb", bytes(32), 1),
        ("x" * (MAX_NAME_BYTES + 1), bytes(32), 1),
        ("bob", bytes(31), 1),
        ("bob", bytes(32), -1),
    ],
)
def test_encode_txt_rejects_bad_input(name: str, fp: bytes, version: int) -> None:
    with pytest.raises(ValueError):
        encode_txt(name, fp, version)


GOOD_FP = os.urandom(32)
GOOD_FP_TEXT = base64.b32encode(GOOD_FP).decode().rstrip("=").encode()


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({}, (None, None, None)),
        ({b"name": None, b"fp": None, b"v": None}, (None, None, None)),
        ({b"name": b"", b"fp": b"", b"v": b""}, (None, None, None)),
        ({b"name": b"\xff\xfe bob", b"fp": b"\x80" * 52, b"v": b"\xff"}, (None, None, None)),
        ({b"name": b"evil\x1b[2J", b"fp": GOOD_FP_TEXT, b"v": b"1"}, (None, GOOD_FP, 1)),
        ({b"name": "a\u202eb".encode()}, (None, None, None)),  # bidi override
        ({b"name": b"x" * (MAX_NAME_BYTES + 1)}, (None, None, None)),
        ({b"fp": GOOD_FP_TEXT[:-1]}, (None, None, None)),  # 51 characters
        ({b"fp": GOOD_FP_TEXT + b"A"}, (None, None, None)),  # 53 characters
        ({b"fp": b"1" * 52}, (None, None, None)),  # not in the base32 alphabet
        ({b"fp": b"-".join([GOOD_FP_TEXT[:26], GOOD_FP_TEXT[26:]])}, (None, None, None)),
        ({b"fp": GOOD_FP.hex().encode()}, (None, None, None)),  # hex is for humans only
        ({b"fp": GOOD_FP_TEXT.lower()}, (None, GOOD_FP, None)),
        ({b"v": b"one"}, (None, None, None)),
        ({b"v": b"-1"}, (None, None, None)),
        ({b"v": b" 1"}, (None, None, None)),
        ({b"v": b"1_0"}, (None, None, None)),
        ({b"v": "\u0661".encode()}, (None, None, None)),  # ARABIC-INDIC DIGIT ONE
        ({b"v": b"9" * 5000}, (None, None, None)),
        ({b"V": b"2", b"NAME": b"bob"}, ("bob", None, 2)),  # keys are case-insensitive
    ],
)
def test_parse_txt_junk(props: dict[bytes, bytes | None], expected: tuple[object, ...]) -> None:
    assert parse_txt(props) == expected


def test_parse_txt_rejects_non_canonical_fingerprint() -> None:
    text = base64.b32encode(bytes(32)).decode().rstrip("=")
    assert text[-1] == "A"
    # The last character carries 4 spare bits; "B" decodes to the same bytes.
    assert parse_txt({b"fp": (text[:-1] + "B").encode()}) == (None, None, None)
    assert parse_txt({b"fp": text.encode()}) == (None, bytes(32), None)


def test_parse_txt_survives_wrong_types() -> None:
    junk: Any = {"name": "bob", 3: b"x", b"fp": 7, b"v": ["1"]}
    assert parse_txt(junk) == ("bob", None, None)


@given(st.dictionaries(st.binary(max_size=8), st.none() | st.binary(max_size=80)))
def test_parse_txt_never_raises(props: dict[bytes, bytes | None]) -> None:
    name, fp, version = parse_txt(props)
    assert name is None or len(name.encode()) <= MAX_NAME_BYTES
    assert fp is None or len(fp) == 32
    assert version is None or version >= 0


# -------------------------------------------------------------------- interfaces


def test_resolve_interfaces() -> None:
    assert resolve_interfaces([]) == []
    assert resolve_interfaces(["127.0.0.1"]) == ["127.0.0.1"]
    assert resolve_interfaces(["::1", "127.0.0.1", "127.0.0.1"]) == ["::1", "127.0.0.1"]
    assert resolve_interfaces(["fe80::1%eth0"]) == ["fe80::1%eth0"]  # the scope is kept
    with pytest.raises(ConfigError, match="link-local address: give its interface"):
        resolve_interfaces(["fe80::1"])


def test_resolve_interfaces_by_name() -> None:
    addresses = resolve_interfaces(["lo"])
    assert "127.0.0.1" in addresses


@pytest.mark.parametrize("spec", ["no-such-if0", "", "127.0.0.256", "lo0:bad"])
def test_resolve_interfaces_unknown(spec: str) -> None:
    with pytest.raises(ConfigError, match="no such interface"):
        resolve_interfaces([spec])


def test_interface_choice() -> None:
    assert interface_choice([]) is InterfaceChoice.All
    assert interface_choice(("127.0.0.1",)) == ["127.0.0.1"]


def test_advertised_addresses() -> None:
    fp = os.urandom(32)

    def make(addresses: list[str]) -> Advertiser:
        return Advertiser(name="x", port=1, fingerprint=fp, addresses=addresses, interfaces=LO)

    # Wildcards and "nothing" stand for the bind addresses: loopback here.
    assert make([]).addresses == ("127.0.0.1",)
    assert make(["0.0.0.0"]).addresses == ("127.0.0.1",)
    assert make(["::1", "10.1.2.3", "127.0.0.1"]).addresses == ("10.1.2.3", "127.0.0.1", "::1")
    with pytest.raises(ConfigError):
        make(["not-an-ip"])
    with pytest.raises(ConfigError):
        make(["::"])  # no IPv6 bind address to stand for


def test_instance_label_is_a_valid_dns_label() -> None:
    fp = os.urandom(32)
    long_name = "é" * 32  # 64 bytes, the most a name may have
    adv = Advertiser(name=long_name, port=1, fingerprint=fp, addresses=LO, interfaces=LO)
    label = adv.instance.removesuffix(f".{SERVICE_TYPE}")
    assert len(label.encode()) <= 59  # room for zeroconf's "-N" on a conflict
    dotted = Advertiser(name="a.b", port=1, fingerprint=fp, addresses=LO, interfaces=LO)
    assert dotted.instance == _instance("a-b", fp)
    tag = format_fingerprint(fp).replace("-", "")[:8]
    assert dotted.instance == f"a-b {tag}.{SERVICE_TYPE}"
    other = Advertiser(name="a.b", port=1, fingerprint=os.urandom(32), addresses=LO, interfaces=LO)
    assert other.instance != dotted.instance  # another key: never the same instance


# --------------------------------------------------------------- advertise/browse


async def test_advertise_then_browse(advertiser: Callable[..., Any]) -> None:
    name = _unique("alice")
    fp = os.urandom(32)
    adv = await advertiser(name, port=45678, fingerprint=fp)
    assert adv.instance == _instance(name, fp)

    hosts = await async_browse(timeout=5, interfaces=LO, want=_has(name))

    [host] = [h for h in hosts if h.instance == adv.instance]
    assert host == HostInfo(
        instance=_instance(name, fp),
        name=name,
        fingerprint=fp,
        version=PROTOCOL_VERSION,
        addresses=("127.0.0.1",),
        port=45678,
    )


async def test_want_returns_early(advertiser: Callable[..., Any]) -> None:
    name = _unique("early")
    await advertiser(name)
    start = time.monotonic()
    hosts = await async_browse(timeout=10, interfaces=LO, want=_has(name))
    elapsed = time.monotonic() - start
    assert any(h.name == name for h in hosts)
    assert elapsed < 2.0, elapsed  # resolution on loopback takes milliseconds


async def test_browse_without_want_waits_for_the_timeout(advertiser: Callable[..., Any]) -> None:
    name = _unique("all")
    await advertiser(name)
    start = time.monotonic()
    hosts = await async_browse(timeout=0.5, interfaces=LO)
    assert time.monotonic() - start >= 0.5
    assert [h.name for h in hosts].count(name) == 1


async def test_two_advertisers_both_listed(advertiser: Callable[..., Any]) -> None:
    ports = {_unique("bob"): 41001, _unique("carol"): 41002}
    await asyncio.gather(*(advertiser(n, port=p) for n, p in ports.items()))
    seen: set[str] = set()

    def want(host: HostInfo) -> bool:
        seen.add(host.name)
        return set(ports) <= seen

    hosts = await async_browse(timeout=5, interfaces=LO, want=want)
    mine = {h.name: (h.instance, h.port) for h in hosts if h.name in ports}
    assert mine == {
        n: (_instance(n, h.fingerprint), p) for n, p in ports.items() for h in hosts if h.name == n
    }


async def test_settle_lists_hosts_answering_after_the_first(
    advertiser: Callable[..., Any],
) -> None:
    """join without a name stops at the first host but lists the others it
    hears within ``settle``, so it can tell "one host" from "several"."""
    names = {_unique("first"), _unique("second")}
    await asyncio.gather(*(advertiser(n) for n in names))
    hosts = await async_browse(timeout=5, interfaces=LO, want=lambda h: h.name in names, settle=1.0)
    assert names <= {h.name for h in hosts}


async def test_several_addresses_all_advertised(advertiser: Callable[..., Any]) -> None:
    name = _unique("multi")
    await advertiser(name, addresses=["::1", "127.0.0.1", "127.0.0.2"])
    hosts = await async_browse(timeout=5, interfaces=LO, want=_has(name))
    [host] = [h for h in hosts if h.name == name]
    assert set(host.addresses) == {"127.0.0.1", "127.0.0.2", "::1"}
    assert host.addresses[-1] == "::1"  # IPv4 first


async def test_name_conflict_renames(advertiser: Callable[..., Any]) -> None:
    name = _unique("twin")
    fp = os.urandom(32)  # the same key twice (one identity, two hosts): a real clash
    first = await advertiser(name, fingerprint=fp)
    second = await advertiser(name, fingerprint=fp)
    assert first.instance == _instance(name, fp)
    assert second.instance == f"{instance_label(name, fp)}-2.{SERVICE_TYPE}"
    seen: set[str] = set()

    def want(host: HostInfo) -> bool:
        seen.add(host.instance)
        return {first.instance, second.instance} <= seen

    hosts = await async_browse(timeout=5, interfaces=LO, want=want)
    twins = [h for h in hosts if h.name == name]  # same display name, from TXT
    assert {h.instance for h in twins} == {first.instance, second.instance}


async def test_closed_advertiser_not_found(advertiser: Callable[..., Any]) -> None:
    gone_name, kept_name = _unique("gone"), _unique("kept")
    gone, _ = await asyncio.gather(advertiser(gone_name), advertiser(kept_name))
    await gone.async_close()
    await gone.async_close()  # idempotent
    hosts = await async_browse(timeout=1.0, interfaces=LO)
    names = {h.name for h in hosts}
    assert kept_name in names
    assert gone_name not in names


async def test_goodbye_during_browse_drops_host(advertiser: Callable[..., Any]) -> None:
    gone_name, kept_name = _unique("bye"), _unique("stay")
    gone, _ = await asyncio.gather(advertiser(gone_name), advertiser(kept_name))
    found = asyncio.Event()

    def want(host: HostInfo) -> bool:  # only watches
        if host.name == gone_name:
            found.set()
        return False

    browse = asyncio.create_task(async_browse(timeout=2, interfaces=LO, want=want))
    await asyncio.wait_for(found.wait(), 2)
    await gone.async_close()  # goodbye while the browse is running
    names = {h.name for h in await browse}
    assert kept_name in names
    assert gone_name not in names


async def test_junk_txt_is_tolerated() -> None:
    """A responder with hostile TXT values: the host is listed with the
    instance label as its name and no fingerprint or version."""
    label = _unique("junk")
    info = ServiceInfo(
        SERVICE_TYPE,
        _instance(label),
        port=4242,
        properties={b"name": b"\xff\xfe\x1b[2J", b"fp": b"not-a-fingerprint", b"v": b"x"},
        parsed_addresses=LO,
        server=f"{label}.local.",
    )
    aiozc = AsyncZeroconf(interfaces=LO)
    try:
        await aiozc.async_register_service(info, cooperating_responders=True)
        hosts = await async_browse(timeout=5, interfaces=LO, want=lambda h: h.name == label)
    finally:
        await aiozc.async_close()
    [host] = [h for h in hosts if h.instance == _instance(label)]
    assert (host.name, host.fingerprint, host.version, host.port) == (label, None, None, 4242)


async def test_browse_works_without_the_unicast_socket(
    advertiser: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the ephemeral-port instance cannot start, the port-5353 one still finds hosts."""
    name = _unique("fallback")
    await advertiser(name)

    def no_unicast(*args: Any, **kwargs: Any) -> AsyncZeroconf:
        if kwargs.get("unicast"):
            raise OSError("no socket for you")
        assert kwargs.get("interfaces") == LO
        return AsyncZeroconf(*args, **kwargs)

    monkeypatch.setattr(discovery, "AsyncZeroconf", no_unicast)
    hosts = await async_browse(timeout=5, interfaces=LO, want=_has(name))
    assert any(h.name == name for h in hosts)


async def test_browse_closes_zeroconf_on_cancel(_loopback_only: list[AsyncZeroconf]) -> None:
    browse = asyncio.create_task(async_browse(timeout=10, interfaces=LO))
    await asyncio.sleep(0)  # let it run to its first wait: both instances exist then
    assert len(_loopback_only) == 2
    await asyncio.wait_for(_loopback_only[0].zeroconf.async_wait_for_start(), 2)
    browse.cancel()
    with pytest.raises(asyncio.CancelledError):
        await browse
    assert all(aiozc.zeroconf.done for aiozc in _loopback_only)


async def test_browse_closes_zeroconf_on_return(_loopback_only: list[AsyncZeroconf]) -> None:
    await async_browse(timeout=0.05, interfaces=LO, want=lambda h: False)
    assert _loopback_only and all(aiozc.zeroconf.done for aiozc in _loopback_only)


async def test_advertiser_context_manager(_loopback_only: list[AsyncZeroconf]) -> None:
    name = _unique("ctx")
    async with Advertiser(
        name=name, port=4000, fingerprint=os.urandom(32), addresses=LO, interfaces=LO
    ) as adv:
        assert adv.instance.startswith(f"{name} ") and adv.instance.endswith(SERVICE_TYPE)
        with pytest.raises(RuntimeError):
            await adv.async_start()
    assert all(aiozc.zeroconf.done for aiozc in _loopback_only)
    await adv.async_close()

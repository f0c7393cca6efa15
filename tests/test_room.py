"""The library itself: two Rooms in one event loop, on loopback.

The host advertises on 127.0.0.1 only; the joiner connects by address (the
discovery path is covered by the CLI tests and the example bot).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import p2pchat
from p2pchat.errors import ConfigError, DiscoveryError, LocalProtocolError

LOOPBACK = ["127.0.0.1"]


def _host(tmp_path, **kw):
    return p2pchat.Room.host(name="bob", home=tmp_path / "bob", interfaces=LOOPBACK, **kw)


def _join(tmp_path, port, name="alice", **kw):
    return p2pchat.Room.join(
        name=name, home=tmp_path / name, connect=f"127.0.0.1:{port}", interfaces=LOOPBACK, **kw
    )


async def _next(events, kind):
    """The next event of ``kind`` (bounded by the test timeout)."""
    async for event in events:
        if isinstance(event, kind):
            return event
    raise AssertionError(f"the stream ended before a {kind.__name__}")


async def test_host_and_join_talk_verify_and_leave(tmp_path: Path) -> None:
    async with _host(tmp_path) as bob:
        assert bob.hosting is not None and bob.hosting.addresses == ("127.0.0.1",)
        bob_events = bob.events()
        async with _join(tmp_path, bob.hosting.port) as alice:
            alice_events = alice.events()
            # the first stream also holds what happened during start()
            dialing = await _next(alice_events, p2pchat.Dialing)
            assert dialing.addresses == (("127.0.0.1", bob.hosting.port),)
            ready = await _next(alice_events, p2pchat.SessionReady)
            assert ready.peer.name == "bob" and ready.trust is p2pchat.Trust.NEW
            assert [m.peer.name for m in alice.members] == ["bob"]
            assert alice.members[0].secure and not alice.members[0].verified

            msg_id = await alice.send("hi bob")
            sent = await _next(alice_events, p2pchat.MessageSent)
            assert sent.msg_id == msg_id and sent.to == ("bob",) and sent.queued
            got = await _next(bob_events, p2pchat.MessageReceived)
            assert (got.peer.name, got.text, got.direct) == ("alice", "hi bob", False)
            done = await _next(alice_events, p2pchat.Delivered)
            assert done.msg_id == msg_id and done.complete
            assert alice.all_delivered and alice.undelivered() == {}

            await bob.send("just you", to="alice")
            direct = await _next(alice_events, p2pchat.MessageReceived)
            assert direct.direct and direct.text == "just you"

            # both sides compare the same string
            assert alice.verification("bob").sas == bob.verification("alice").sas
            alice.mark_verified(alice.members[0].peer.fingerprint)
            assert alice.members[0].verified

            with pytest.raises(LocalProtocolError, match="no one here is called"):
                await alice.send("x", to="carol")
            with pytest.raises(LocalProtocolError):
                await alice.send("x" * 70_000)
        left = await _next(bob_events, p2pchat.PeerLeft)
        assert left.peer.name == "alice" and left.clean
    # leaving ends every stream; the host leaving on purpose is not a lost relay
    rest = [e async for e in bob_events]
    assert not any(isinstance(e, p2pchat.Disconnected | p2pchat.RoomEnded) for e in rest), rest


async def test_the_host_leaving_ends_the_joiners_room(tmp_path: Path) -> None:
    bob = _host(tmp_path)
    await bob.start()
    assert bob.hosting is not None
    async with _join(tmp_path, bob.hosting.port) as alice:
        events = alice.events()
        await _next(events, p2pchat.SessionReady)
        await bob.leave()
        ended = await _next(events, p2pchat.RoomEnded)
        assert ended.by_host and ended.exit_code == p2pchat.ExitCode.FAILURE
        assert alice.ended == ended


async def test_an_unknown_host_under_require_known_is_refused_with_exit_3(tmp_path: Path) -> None:
    async with _host(tmp_path) as bob:
        assert bob.hosting is not None
        room = _join(tmp_path, bob.hosting.port, require_known=True)
        with pytest.raises(p2pchat.P2PChatError) as caught:
            async with room:
                pass
        assert caught.value.exit_code == p2pchat.ExitCode.MISMATCH
        assert "not connecting to bob" in str(caught.value)


async def test_bad_names_and_addresses_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        p2pchat.Room.join(name="bad\x1bname", home=tmp_path / "x")
    room = p2pchat.Room.join(name="alice", home=tmp_path / "a", connect="127.0.0.1:0")
    with pytest.raises(ConfigError, match=r"ADDR\[:PORT\]"):
        await room.start()
    await room.leave()
    nobody = p2pchat.Room.join(
        name="alice", home=tmp_path / "a", host="nobody-here", interfaces=LOOPBACK, timeout=0.5
    )
    with pytest.raises(DiscoveryError, match="no host named 'nobody-here'"):
        async with nobody:
            pass


async def test_leaving_while_messages_keep_coming_seals_nothing_after_the_goodbye(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """alice (no durable outbox: acks go at once) leaves while bob keeps
    sending: what arrives after her goodbye is not answered. Answering raised
    in her reader ("cannot seal: this direction was closed"), which then died
    and closed the connection with input unread."""
    import asyncio

    async with _host(tmp_path) as bob:
        assert bob.hosting is not None
        left = []
        bob.bus.add_sink(lambda e: left.append(e) if isinstance(e, p2pchat.PeerLeft) else None)
        alice = _join(tmp_path, bob.hosting.port, durable=False)
        got: list[p2pchat.Event] = []
        alice.bus.add_sink(
            lambda e: got.append(e) if isinstance(e, p2pchat.MessageReceived) else None
        )
        await alice.start()
        assert await bob.wait_for(lambda: any(m.secure for m in bob.members), 10)
        going = True

        async def chatter() -> None:
            n = 0
            while going and n < 20_000:  # bounded
                await bob.send(f"m{n}")
                n += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(chatter())
        assert await alice.wait_for(lambda: len(got) >= 50, 10)  # a stream is under way
        await alice.leave()
        going = False
        await task
        assert await bob.wait_for(lambda: bool(left), 5)
    assert not any("cannot seal" in r.getMessage() for r in caplog.records), caplog.text
    assert left[0].clean, left

"""The per-peer machine (room/peer.py), sans-I/O: its table, its timers; and
unknown application message types, which a receiver ignores."""

from __future__ import annotations

import itertools

import msgpack
import pytest

from p2pchat.errors import LocalProtocolError, MalformedFrameError
from p2pchat.proto.app import (
    Ack,
    Chat,
    KeepAlive,
    Refuse,
    RefuseCode,
    Unknown,
    encode_app,
    parse_app,
)
from p2pchat.room.events import PeerInfo
from p2pchat.room.peer import TRANSITIONS, Due, Peer, PeerState, Step

INFO = PeerInfo(7, "bob", b"\x01" * 32)
KA, DEAD = 5.0, 15.0


def at(state: PeerState) -> Peer:
    peer = Peer(INFO)
    peer.state = state
    return peer


@pytest.mark.parametrize(("state", "step"), list(itertools.product(PeerState, Step)))
def test_every_pair_follows_the_table(state: PeerState, step: Step) -> None:
    peer = at(state)
    nxt = TRANSITIONS.get((state, step))
    if nxt is None:
        with pytest.raises(LocalProtocolError, match=f"{step.value} .* {state.value}"):
            peer.go(step)
        assert peer.state is state
    else:
        assert peer.go(step) is nxt


def test_the_table_is_the_documented_shape() -> None:
    # the only way to READY is a completed handshake; nothing leaves GONE
    assert [k for k, v in TRANSITIONS.items() if v is PeerState.READY] == [
        (PeerState.HANDSHAKING, Step.COMPLETE)
    ]
    assert not [k for k in TRANSITIONS if k[0] is PeerState.GONE]
    assert (PeerState.REFUSED, Step.REFUSE) not in TRANSITIONS


def test_ending_drops_the_handshake() -> None:
    peer = at(PeerState.HANDSHAKING)
    peer.hs_deadline = 3.0
    peer.go(Step.REFUSE)
    assert peer.ended and peer.hs is None and peer.hs_deadline is None


def test_a_ready_peer_is_probed_when_quiet_and_dead_when_silent() -> None:
    peer = at(PeerState.READY)
    peer.last_heard = peer.last_sent = 100.0
    assert peer.deadline(KA, DEAD) == 105.0
    assert peer.due(104.9, KA, DEAD) is None
    assert peer.due(105.0, KA, DEAD) is Due.PROBE
    peer.last_sent = 105.0  # the probe went out: next probe 5 s later, death still at 115
    assert peer.deadline(KA, DEAD) == 110.0
    peer.last_sent = 112.0
    assert peer.deadline(KA, DEAD) == 115.0
    assert peer.due(115.0, KA, DEAD) is Due.DEAD
    peer.last_heard = 114.0  # it answered: next probe 5 s after that, death at 129
    assert peer.due(115.0, KA, DEAD) is None
    assert peer.deadline(KA, DEAD) == 119.0


def test_a_handshake_has_a_deadline_but_never_while_a_worker_runs_it() -> None:
    peer = at(PeerState.HANDSHAKING)
    peer.hs_deadline = 50.0
    assert peer.deadline(KA, DEAD) == 50.0
    assert peer.due(49.0, KA, DEAD) is None
    assert peer.due(50.0, KA, DEAD) is Due.HANDSHAKE_LATE
    peer.go(Step.OFF_LOOP)
    assert peer.working and peer.deadline(KA, DEAD) is None
    assert peer.due(99.0, KA, DEAD) is None
    peer.go(Step.STEP_DONE)
    assert peer.due(99.0, KA, DEAD) is Due.HANDSHAKE_LATE


@pytest.mark.parametrize(
    "state", [PeerState.NEW, PeerState.HELD, PeerState.REFUSED, PeerState.GONE]
)
def test_other_states_have_no_timer(state: PeerState) -> None:
    peer = at(state)
    assert peer.deadline(KA, DEAD) is None and peer.due(1e9, KA, DEAD) is None


def test_failures_soon_after_a_session_came_up_back_off_and_a_lasting_one_starts_over() -> None:
    peer = at(PeerState.HANDSHAKING)
    peer.established(object(), 100.0)  # type: ignore[arg-type]
    assert peer.was_ready and peer.ready_since == 100.0
    # the first failure heals at once
    assert peer.failed(110.0, 30.0, 0.5, 4.0) == 0.0
    assert peer.state is PeerState.HEALING and peer.result is None and peer.heals == 1
    assert peer.deadline(KA, DEAD) == 110.0 and peer.due(110.0, KA, DEAD) is Due.HEAL
    delays = []
    for i in range(6):  # each fresh session fails again within 30 s of coming up
        peer.go(Step.START)
        peer.established(object(), 111.0 + i)  # type: ignore[arg-type]
        delays.append(peer.failed(112.0 + i, 30.0, 0.5, 4.0))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0] and peer.heals == 7
    # a fresh handshake that fails counts too (it is not READY when it fails)
    peer.go(Step.START)
    assert peer.failed(200.0, 30.0, 0.5, 4.0) == 4.0 and peer.heals == 8
    # a session that lasted 30 s starts the count again
    peer.go(Step.START)
    peer.established(object(), 300.0)  # type: ignore[arg-type]
    assert peer.failed(330.0, 30.0, 0.5, 4.0) == 0.0 and peer.heals == 1


def test_a_refusal_code_this_version_does_not_know_is_protocol() -> None:
    assert parse_app(encode_app(Refuse(RefuseCode.OWN_KEY, "ours"))) == Refuse(
        RefuseCode.OWN_KEY, "ours"
    )
    body = msgpack.packb({"t": "refuse", "code": "no-cookies", "reason": "r"})
    assert parse_app(body) == Refuse(RefuseCode.PROTOCOL, "r")
    for bad in (
        {"code": "", "reason": "r"},
        {"code": "x" * 33, "reason": "r"},
        {"code": "é", "reason": "r"},
        {"code": "protocol", "reason": "r" * 1025},
        {"code": "protocol"},
    ):
        with pytest.raises(MalformedFrameError):
            parse_app(msgpack.packb({"t": "refuse", **bad}))


# ---------------------------------------------------------------- unknown types


def test_an_unknown_type_parses_as_unknown_and_known_ones_still_parse() -> None:
    assert parse_app(msgpack.packb({"t": "receipt", "id": b"x" * 16})) == Unknown("receipt")
    chat = Chat(b"\x02" * 16, "hi")
    assert parse_app(encode_app(chat)) == chat
    assert parse_app(encode_app(KeepAlive(True))) == KeepAlive(True)


@pytest.mark.parametrize("kind", [None, 1, b"msg", "", "x" * 17, ["msg"]])
def test_a_type_that_is_not_a_short_str_is_malformed(kind: object) -> None:
    body = {"x": 1} if kind is None else {"t": kind}
    with pytest.raises(MalformedFrameError):
        parse_app(msgpack.packb(body))


def test_a_known_type_with_bad_fields_is_still_malformed() -> None:
    with pytest.raises(MalformedFrameError):
        parse_app(msgpack.packb({"t": "msg", "id": b"short", "text": "hi"}))


# ---------------------------------------------------------------- the token bucket


def test_the_token_bucket_takes_charges_and_says_how_long_to_wait() -> None:
    from p2pchat.proto.bucket import TokenBucket

    bucket = TokenBucket(rate=10.0, burst=2.0, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.take(0.1)  # one token back after 1/rate s
    assert bucket.charge(0.1, 3.0) == pytest.approx(0.3)  # queued: 3 units, 0.3 s of debt
    assert bucket.wait() == pytest.approx(0.3)
    assert bucket.charge(0.4, 0.0) == pytest.approx(0.0)  # paid back
    assert bucket.take(10.0) and bucket.tokens == pytest.approx(1.0)  # never above burst
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0, 0.0)


@pytest.mark.parametrize("size", [100, 100_000])
def test_what_a_peer_hides_under_an_unknown_key_is_ignored_at_any_size(size: int) -> None:
    # small payloads take the generic decoder, large ones the field-by-field one:
    # the same answers either way
    junk = [[[] for _ in range(15)] for _ in range(size // 16)] if size > 1000 else [[1]]
    chat = {"t": "msg", "id": b"\x02" * 16, "text": "hi", "later-version": junk}
    assert parse_app(msgpack.packb(chat)) == Chat(b"\x02" * 16, "hi")
    bad = {"t": "msg", "id": b"\x02" * 16, "text": junk}  # a container where a str belongs
    with pytest.raises(MalformedFrameError):
        parse_app(msgpack.packb(bad))
    ack = {"t": "ack", "ids": [b"\x03" * 16] * 3, "pad": junk}
    assert parse_app(msgpack.packb(ack)) == Ack((b"\x03" * 16,) * 3)

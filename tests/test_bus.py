"""The one event bus: publish order, predicates, subscriptions, bounded queues."""

from __future__ import annotations

import asyncio

import pytest

from p2pchat.errors import (
    ConfigError,
    DiscoveryError,
    ExitCode,
    KeyMismatchError,
    P2PChatError,
    RefusedError,
    TrustError,
    UndeliveredError,
    describe_error,
)
from p2pchat.room.bus import EventBus


async def test_wait_for_wakes_on_notify_and_returns_false_on_timeout() -> None:
    bus: EventBus[str] = EventBus()
    state = {"ready": False}

    async def later() -> None:
        await asyncio.sleep(0)
        state["ready"] = True
        bus.notify()

    task = asyncio.ensure_future(later())
    assert await bus.wait_for(lambda: state["ready"], 5.0)
    await task
    assert not await bus.wait_for(lambda: False, 0.01)


async def test_every_consumer_sees_one_order_even_when_a_sink_publishes() -> None:
    bus: EventBus[str] = EventBus()
    sub = bus.subscribe()
    seen: list[str] = []

    def echo(event: str) -> None:
        if event == "a":
            bus.publish("b")  # published from inside a publish

    bus.add_sink(echo)
    bus.add_sink(seen.append)
    bus.publish("a")
    bus.close()
    assert seen == ["a", "b"]
    assert [e async for e in sub] == ["a", "b"]


async def test_a_subscriber_that_does_not_read_is_bounded() -> None:
    bus: EventBus[int] = EventBus()
    sub = bus.subscribe(limit=3)
    for i in range(10):
        bus.publish(i)
    assert sub.dropped == 7
    assert [await sub.get(0.1) for _ in range(3)] == [7, 8, 9]
    assert await sub.get(0.01) is None


async def test_closing_ends_subscriptions_after_their_queue() -> None:
    bus: EventBus[int] = EventBus()
    sub = bus.subscribe()
    bus.publish(1)
    bus.close()
    assert [e async for e in sub] == [1]
    late = bus.subscribe()
    assert [e async for e in late] == []


def test_a_removed_sink_hears_nothing() -> None:
    bus: EventBus[int] = EventBus()
    seen: list[int] = []
    remove = bus.add_sink(seen.append)
    bus.publish(1)
    remove()
    remove()  # twice is harmless
    bus.publish(2)
    assert seen == [1]


@pytest.mark.parametrize(
    ("exc", "line", "code"),
    [
        (ConfigError("bad flag"), "bad flag", ExitCode.USAGE),
        (DiscoveryError("no host"), "no host", ExitCode.USAGE),
        (KeyMismatchError("changed"), "key mismatch: changed", ExitCode.MISMATCH),
        (TrustError("unknown"), "not trusted: unknown", ExitCode.MISMATCH),
        (RefusedError("not connecting", for_trust=True), "error: not connecting", 3),
        (RefusedError("not connecting", for_trust=False), "error: not connecting", 1),
        (UndeliveredError("2 left"), "error: 2 left", ExitCode.UNDELIVERED),
        (P2PChatError("broken"), "error: broken", ExitCode.FAILURE),
        (OSError(13, "Permission denied"), "error: Permission denied", ExitCode.FAILURE),
    ],
)
def test_one_map_from_error_to_line_and_exit_code(exc: Exception, line: str, code: int) -> None:
    assert describe_error(exc) == (line, code)


def test_errors_not_ours_are_not_swallowed() -> None:
    with pytest.raises(KeyError):
        describe_error(KeyError("bug"))

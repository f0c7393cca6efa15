"""The one way to say "something changed": an event bus.

Every producer in a room (the participant, the file transfers, the link that
reconnects) calls :meth:`EventBus.publish` with a typed event, or
:meth:`EventBus.notify` when only state changed. Consumers either subscribe
(:meth:`EventBus.subscribe`, an async iterator with its own queue) or wait for
a predicate over the room's state (:meth:`EventBus.wait_for`, re-checked after
every change, as :meth:`asyncio.Condition.wait_for` does).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

__all__ = ["EventBus", "Subscription"]

E = TypeVar("E")

#: Events kept for a subscriber that does not read, at most; older ones are
#: dropped and counted (a face that stops reading must not grow memory).
QUEUE_LIMIT = 10_000


class Subscription(Generic[E]):
    """One consumer's queue of events, an async iterator that ends when the bus
    is closed (or :meth:`close` is called) and every queued event was read."""

    def __init__(self, bus: EventBus[E], limit: int) -> None:
        self._bus = bus
        self._queue: collections.deque[E] = collections.deque()
        self._limit = limit
        self.dropped = 0  #: events lost because this subscriber fell too far behind
        self.closed = False

    def _put(self, event: E) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._subscribers.discard(self)
            self._bus.notify()

    def __aiter__(self) -> AsyncIterator[E]:
        return self

    async def __anext__(self) -> E:
        await self._bus.wait_for(lambda: bool(self._queue) or self.closed)
        if self._queue:
            return self._queue.popleft()
        raise StopAsyncIteration

    async def get(self, timeout: float | None = None) -> E | None:
        """The next event, or None after ``timeout`` seconds (or once closed)."""
        await self._bus.wait_for(lambda: bool(self._queue) or self.closed, timeout)
        return self._queue.popleft() if self._queue else None


class EventBus(Generic[E]):
    """Publish events and changes; wait for predicates; subscribe to events."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self._subscribers: set[Subscription[E]] = set()
        self._sinks: list[Callable[[E], None]] = []
        self._version = 0
        self._queue: collections.deque[E] = collections.deque()
        self._publishing = False
        self.closed = False

    @property
    def version(self) -> int:
        """Goes up on every publish and notify: 'has anything happened since?'"""
        return self._version

    def publish(self, event: E) -> None:
        """Hand ``event`` to every sink and subscriber, then wake the waiters.
        Plain (not async): call it from the loop's thread. An event published
        by a sink is handed on after this one, so everyone sees one order."""
        self._queue.append(event)
        if self._publishing:
            return
        self._publishing = True
        try:
            while self._queue:
                current = self._queue.popleft()
                for sink in list(self._sinks):
                    sink(current)
                for sub in list(self._subscribers):
                    sub._put(current)
        finally:
            self._publishing = False
            self._queue.clear()
        self.notify()

    def notify(self) -> None:
        """State changed (no event): every waiter re-checks its predicate."""
        self._version += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def add_sink(self, sink: Callable[[E], None]) -> Callable[[], None]:
        """Call ``sink(event)`` synchronously on every publish; returns its remover."""
        self._sinks.append(sink)

        def remove() -> None:
            if sink in self._sinks:
                self._sinks.remove(sink)

        return remove

    def subscribe(self, limit: int = QUEUE_LIMIT) -> Subscription[E]:
        """A new queue that receives every event published from now on."""
        sub: Subscription[E] = Subscription(self, limit)
        if self.closed:
            sub.closed = True
        else:
            self._subscribers.add(sub)
        return sub

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` holds, re-checked after every change (the
        semantics of :meth:`asyncio.Condition.wait_for`); returns its value
        (False on timeout)."""

        async def until() -> None:
            loop = asyncio.get_running_loop()
            while not predicate():
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.add(fut)
                try:
                    await fut
                finally:
                    self._waiters.discard(fut)

        if predicate():
            return True
        try:
            await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            return predicate()
        return True

    def close(self) -> None:
        """No more events: every subscription ends once its queue is read."""
        self.closed = True
        for sub in list(self._subscribers):
            sub.closed = True
        self._subscribers.clear()
        self.notify()

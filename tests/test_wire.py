"""On the wire: what a LAN observer, or the relay, sees of a conversation.

A recording TCP proxy on 127.0.0.1 sits between ``join --connect`` and the
host. Sentinel messages go both ways and are delivered, yet their bytes never
appear in the captured traffic; with ``-v -v --log-file`` on both sides they
appear in no log file either (README: logs never contain message text).
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
from pathlib import Path

import pytest
from procs import ProcPool, start_host, start_join, wait_session

pytestmark = pytest.mark.timeout(90)


class RecordingProxy:
    """Forwards every connection to 127.0.0.1:``target`` and records the bytes."""

    MAX_CONNECTIONS = 8

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.to_host = bytearray()  #: joiner -> host, every connection
        self.to_joiner = bytearray()  #: host -> joiner
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="proxy")]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set() and self.connections < self.MAX_CONNECTIONS:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            for src, dst, buf in (
                (client, upstream, self.to_host),
                (upstream, client, self.to_joiner),
            ):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def captured(self) -> bytes:
        with self._lock:
            return bytes(self.to_host) + b"\n----\n" + bytes(self.to_joiner)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(5.0)


@pytest.fixture
def proxy_factory():
    made: list[RecordingProxy] = []

    def make(target: int) -> RecordingProxy:
        proxy = RecordingProxy(target)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


def forms(text: str) -> list[bytes]:
    """The byte forms of ``text`` that would betray it: UTF-8 and its hex."""
    raw = text.encode("utf-8")
    return [raw, raw.hex().encode(), raw.hex().upper().encode()]


def test_messages_are_opaque_on_the_wire_and_absent_from_logs(
    procs: ProcPool, proxy_factory, tmp_path: Path
) -> None:
    tag = secrets.token_hex(8)
    from_alice = [f"SENTINEL-PLAINTEXT-{tag}-a{i} ✓" for i in range(3)]
    from_bob = [f"SENTINEL-PLAINTEXT-{tag}-b{i}" for i in range(2)]
    host_log, join_log = tmp_path / "host.log", tmp_path / "join.log"

    bob, port = start_host(procs, procs.home("bob"), "-v", "-v", "--log-file", host_log)
    proxy = proxy_factory(port)
    alice = start_join(
        procs,
        procs.home("alice"),
        "--connect",
        f"127.0.0.1:{proxy.port}",
        "--timeout",
        "15",
        "-v",
        "-v",
        "--log-file",
        join_log,
    )
    alice.wait_for_line("stderr", rf"connected to 127\.0\.0\.1:{proxy.port}$")
    wait_session(alice, "bob")
    wait_session(bob, "alice")

    for text in from_alice:
        alice.send_line(text)
    assert bob.wait_for_lines("stdout", 3) == [f"alice: {t}" for t in from_alice]
    for text in from_bob:
        bob.send_line(text)
    assert alice.wait_for_lines("stdout", 2) == [f"bob: {t}" for t in from_bob]
    alice.close_stdin()
    assert alice.wait() == 0, alice.describe()
    bob.wait_for_line("stderr", "alice left")
    bob.terminate()
    assert bob.wait() == 0, bob.describe()
    proxy.close()

    # everything went through the proxy, and the capture does show cleartext
    # that is public by design (the names in the relay registration)
    assert proxy.connections == 1
    assert len(proxy.to_host) > 1000 and len(proxy.to_joiner) > 1000
    assert b"alice" in proxy.to_host
    assert b"bob" in proxy.to_joiner

    wire = proxy.captured()
    for form in [f for text in from_alice + from_bob for f in forms(text)] + [tag.encode()]:
        assert form not in wire, f"{form!r} seen on the wire"

    logs = {path: path.read_bytes() for path in (host_log, join_log)}
    for path, data in logs.items():
        assert data.strip(), f"{path.name} is empty: -v -v --log-file logged nothing"
        for form in [f for text in from_alice + from_bob for f in forms(text)] + [tag.encode()]:
            assert form not in data, f"{form!r} in {path.name}"
    # nor is it at rest: whatever the homes keep (keys, pins, outbox) is not cleartext
    stored = [f for home in ("bob", "alice") for f in procs.home(home).rglob("*") if f.is_file()]
    assert stored
    for path in stored:
        data = path.read_bytes()
        for form in [f for text in from_alice + from_bob for f in forms(text)] + [tag.encode()]:
            assert form not in data, f"{form!r} in {path}"
    # status lines do not carry the text either; only the message stream does
    for proc in (alice, bob):
        assert tag not in "\n".join(proc.stderr)

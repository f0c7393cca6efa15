"""Shared fixtures: identity keys generated once per session, deterministic randomness."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from p2pchat.config import RSA_BITS, RSA_EXPONENT


class DetRng:
    """A deterministic byte stream: SHA-256(label || counter) blocks, concatenated.

    ``rng(n)`` returns the next ``n`` bytes of the stream, so two instances
    made with the same label give the same bytes for the same calls (use it
    wherever the code under test takes an ``rng``).
    """

    def __init__(self, label: str | bytes) -> None:
        self.label = label.encode() if isinstance(label, str) else label
        self._counter = 0
        self._buf = b""
        self.calls: list[bytes] = []  #: every output, in order

    def __call__(self, n: int) -> bytes:
        while len(self._buf) < n:
            block = self.label + b"\x00" + self._counter.to_bytes(8, "big")
            self._buf += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buf = self._buf[:n], self._buf[n:]
        self.calls.append(out)
        return out


@pytest.fixture
def det_rng() -> type[DetRng]:
    """The :class:`DetRng` factory: ``det_rng("label")`` is an ``rng`` callable."""
    return DetRng


@pytest.fixture(scope="session")
def rsa_keys() -> tuple[rsa.RSAPrivateKey, ...]:
    """Three distinct RSA-3072 identity keys (e = 65537), generated once per session."""
    return tuple(
        rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_BITS) for _ in range(3)
    )


@pytest.fixture(scope="session")
def rsa2048() -> rsa.RSAPrivateKey:
    """An RSA key below the accepted minimum size."""
    return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=2048)


# ------------------------------------------------- end-to-end process fixtures


@pytest.fixture(scope="session")
def p2pchat_keys(tmp_path_factory):
    """Where :class:`procs.ProcPool` keeps one template home per identity label."""
    return tmp_path_factory.mktemp("p2pchat-keys")


@pytest.fixture
def procs(tmp_path, p2pchat_keys):
    """A :class:`procs.ProcPool`: start p2pchat processes; leftovers are killed at teardown."""
    from procs import ProcPool

    pool = ProcPool(tmp_path, p2pchat_keys)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def private_lo(request):
    """A command prefix that runs a process in a network namespace of its own
    with only a loopback interface (root and iproute2 needed; otherwise ``[]``:
    the shared loopback, where other p2pchat hosts running on this machine can
    be seen by mDNS). The namespace is removed at teardown."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("ip") is None:
        yield []
        return
    name = f"p2pt-lo-{os.getpid()}-{abs(hash(request.node.nodeid)) % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=15)
    try:
        subprocess.run(
            ["ip", "-n", name, "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
            timeout=15,
        )
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)


def _need_netns() -> None:
    import os
    import shutil

    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2's 'ip'")


@pytest.fixture
def two_devices():
    """Two namespaces ("devices") on one veth link; root and iproute2 needed."""
    _need_netns()
    from netlab import make_two_devices

    yield from make_two_devices()


@pytest.fixture
def two_v6_devices():
    """The same on an IPv6-only link (a ULA /64, no IPv4 at all)."""
    _need_netns()
    from netlab import make_two_devices

    yield from make_two_devices("6", ipv4=False, ipv6=True)


@pytest.fixture
def two_dual_devices():
    """The same with IPv4 and IPv6 on the link."""
    _need_netns()
    from netlab import make_two_devices

    yield from make_two_devices("d", ipv4=True, ipv6=True)


@pytest.fixture
def routed_devices():
    """A host and a joiner on two subnets, routed: unicast works, mDNS does not cross."""
    _need_netns()
    from netlab import make_routed_devices

    yield from make_routed_devices()

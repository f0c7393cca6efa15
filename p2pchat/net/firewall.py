"""The local firewall's view of mDNS and the p2pchat port, where it can be read.

Best effort and read-only: on Linux, ``nft list ruleset`` or ``iptables -S``
(and ``ip6tables -S``) when they are installed and we may run them; elsewhere,
or without the rights, it says that it cannot tell. Only rules that name UDP
5353 or the TCP port and drop or reject are reported.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

__all__ = ["FirewallView", "read_firewall"]

_VERDICT = re.compile(r"\b(drop|reject|DROP|REJECT)\b")


@dataclass(frozen=True, slots=True)
class FirewallView:
    readable: bool  #: a rule set could be read
    source: str  #: which tool, or why none could be used
    blocking: tuple[str, ...]  #: rules that drop or reject mDNS or the port

    def describe(self) -> str:
        if not self.readable:
            return f"local firewall: cannot tell ({self.source})"
        if not self.blocking:
            return f"local firewall ({self.source}): no rule drops UDP 5353 or TCP port"
        return f"local firewall ({self.source}): blocking rules: " + "; ".join(self.blocking)


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def read_firewall(port: int) -> FirewallView:
    """What the local firewall says about UDP 5353 and TCP ``port``."""
    wanted = re.compile(rf"\b(5353|{port})\b")
    for tool, argvs in (
        ("nft", [["nft", "list", "ruleset"]]),
        ("iptables", [["iptables", "-S"], ["ip6tables", "-S"]]),
    ):
        if shutil.which(argvs[0][0]) is None:
            continue
        texts = [t for t in (_run(a) for a in argvs if shutil.which(a[0])) if t is not None]
        if not texts:
            return FirewallView(False, f"{tool} could not be run: not root?", ())
        rules = [
            line.strip()
            for text in texts
            for line in text.splitlines()
            if wanted.search(line) and _VERDICT.search(line)
        ]
        return FirewallView(True, tool, tuple(rules[:8]))
    return FirewallView(False, "no nft or iptables on this machine", ())

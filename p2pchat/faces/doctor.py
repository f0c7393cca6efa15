"""``p2pchat doctor`` and ``discover --probe``: what this machine's side of discovery looks like.

It lists the interfaces a host here would advertise and those it skips (and
why), browses for hosts while counting every mDNS record heard (is multicast
getting through at all?), probes each advertised address of each host found
(reachable, refused, timed out, unreachable), and ends with one line of
advice. It only listens and connects where ``join`` would.
"""

from __future__ import annotations

import argparse
import json

from p2pchat.room import (
    DEFAULT_PORT,
    MAX_CANDIDATES,
    BrowseReport,
    ExitCode,
    HostInfo,
    async_browse,
    async_race,
    display_name,
    format_fingerprint,
    list_interfaces,
    read_firewall,
    resolve_interfaces,
)

__all__ = ["async_probe", "run_doctor"]

#: Seconds for one address's TCP probe.
PROBE_TIMEOUT = 2.0


async def async_probe(host: HostInfo) -> list[tuple[str, str]]:
    """(address, outcome) for each advertised address: "reachable" or what failed."""
    out = []
    for address in host.addresses[:MAX_CANDIDATES]:
        winner, failed = await async_race([(address, host.port)], PROBE_TIMEOUT)
        if winner is not None:
            winner.streams[1].close()
            out.append((address, "reachable"))
        else:
            out.append((address, failed[0].outcome if failed else "timed out"))
    return out


def _advice(report: BrowseReport, usable: int, probes: dict[str, list[tuple[str, str]]]) -> str:
    if not usable:
        return "no interface here that a peer could reach: connect to the network first"
    if report.send_error:
        return f"{report.send_error}: allow UDP port 5353 out and in on this machine"
    if not probes:
        if not report.records:
            return (
                "no mDNS answer at all: multicast is blocked here, or nobody else is on this "
                "network; ask the host for its address and run 'p2pchat join --connect ADDR'"
            )
        return "mDNS works but no p2pchat host answers: is 'p2pchat host' running on this network?"
    dead = [name for name, rows in probes.items() if all(o != "reachable" for _, o in rows)]
    if dead:
        return (
            f"found {', '.join(dead)}, but no advertised address answers: "
            "a firewall on that machine, or another subnet?"
        )
    return "everything looks fine: 'p2pchat join' should work"


async def run_doctor(args: argparse.Namespace) -> int:
    """Print the report; exit 0 when a host was found and reached, 2 when none
    was found, 1 when one was found but could not be reached."""
    interfaces = list_interfaces()
    used = [i for i in interfaces if i.skip is None]
    if not args.json:
        print("interfaces:")
        for i in interfaces:
            state = "used" if i.skip is None else f"skipped: {i.skip}"
            print(f"  {i.name:12} {', '.join(i.addresses):40} {state}")
    bind = resolve_interfaces(args.interface or [])
    report = BrowseReport(bind)
    hosts = await async_browse(timeout=args.timeout, interfaces=bind, report=report)
    probes = {h.name: await async_probe(h) for h in hosts}
    firewall = read_firewall(hosts[0].port if hosts else DEFAULT_PORT)
    advice = _advice(report, len(used) or len(bind), probes)
    if args.json:
        print(
            json.dumps(
                {
                    "interfaces": [
                        {"name": i.name, "addresses": list(i.addresses), "skip": i.skip}
                        for i in interfaces
                    ],
                    "mdns": {
                        "listened": report.listened,
                        "records": report.records,
                        "send_error": report.send_error,
                    },
                    "firewall": {
                        "readable": firewall.readable,
                        "source": firewall.source,
                        "blocking": list(firewall.blocking),
                    },
                    "hosts": [
                        {
                            "name": h.name,
                            "port": h.port,
                            "fingerprint": format_fingerprint(h.fingerprint)
                            if h.fingerprint
                            else None,
                            "addresses": dict(probes[h.name]),
                        }
                        for h in hosts
                    ],
                    "advice": advice,
                },
                ensure_ascii=False,
            )
        )
    else:
        where = ", ".join(report.listened) or "all interfaces"
        print(f"mDNS on {where} for {args.timeout:g} s: {report.records} record(s) heard")
        if report.send_error:
            print(f"  {report.send_error}")
        print(firewall.describe())
        for h in hosts:
            print(f"  host {display_name(h.name)} port {h.port}:")
            for address, outcome in probes[h.name]:
                print(f"    {address:40} {outcome}")
        print(f"advice: {advice}")
    if not hosts:
        return ExitCode.USAGE
    reached = any(o == "reachable" for rows in probes.values() for _, o in rows)
    return ExitCode.OK if reached else ExitCode.FAILURE

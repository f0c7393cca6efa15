"""The small commands: ``trust list|forget|verify`` and ``discover``.

``trust list`` flags a pinned name that mixes scripts (``NAME[mixed
scripts]``, and which scripts) and one that looks like another pin's name
(two keys under one name to the eye: forget the one that is not theirs)."""

from __future__ import annotations

import argparse
import datetime
import json

from p2pchat.room import TrustStore, display_name, format_fingerprint, is_mixed_script, name_scripts

__all__ = ["run_discover", "run_trust"]


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def run_trust(args: argparse.Namespace, store: TrustStore) -> int:
    """``trust list|forget|verify``; an unknown peer is a usage error (exit 2)."""
    from p2pchat.errors import ConfigError, TrustError

    try:
        return _trust(args, store)
    except TrustError as exc:
        raise ConfigError(str(exc)) from exc


def _trust(args: argparse.Namespace, store: TrustStore) -> int:
    if args.trust_command == "list":
        pins = store.all()
        if not pins:
            print("no pinned peers yet")
        for pin in pins:
            notes = ["verified" if pin.verified else "unverified"]
            if is_mixed_script(pin.name):
                notes.append("mixed scripts: " + "+".join(sorted(name_scripts(pin.name))))
            notes += [
                f"looks like {display_name(p.name)} {format_fingerprint(p.fingerprint)[:9]}"
                for p in store.by_name(pin.name)
                if p.fingerprint != pin.fingerprint
            ]
            print(
                f"{display_name(pin.name):24} {format_fingerprint(pin.fingerprint)}  "
                f"{', '.join(notes)}, first seen {_when(pin.first_seen)}, "
                f"last {_when(pin.last_seen)}"
            )
        return 0
    if args.trust_command == "forget":
        for pin in store.forget(args.peer):
            print(f"forgot {display_name(pin.name)} {format_fingerprint(pin.fingerprint)}")
        return 0
    # verify
    from p2pchat.errors import TrustError

    pins = store.by_name(args.peer)
    if not pins:
        raise TrustError(f"no pinned peer named {args.peer!r} (see 'p2pchat trust list')")
    if len(pins) > 1:
        raise TrustError(
            f"{len(pins)} keys are pinned under names like {args.peer!r}: 'p2pchat trust "
            "forget FP' the ones that are not theirs first (see 'p2pchat trust list')"
        )
    for pin in pins:
        store.set_verified(pin.fingerprint, True)
        print(f"marked {display_name(pin.name)} {format_fingerprint(pin.fingerprint)} as verified")
    return 0


async def run_discover(args: argparse.Namespace) -> int:
    from p2pchat.room import BrowseReport, async_browse, resolve_interfaces

    bind = resolve_interfaces(args.interface or [])
    report = BrowseReport(bind)
    hosts = await async_browse(timeout=args.timeout, interfaces=bind, report=report)
    probes = {}
    if getattr(args, "probe", False):
        from p2pchat.faces.doctor import async_probe

        probes = {h.instance: dict(await async_probe(h)) for h in hosts}
    for host in hosts:
        fp = format_fingerprint(host.fingerprint) if host.fingerprint else None
        probed = probes.get(host.instance)
        if args.json:
            print(
                json.dumps(
                    {
                        "name": host.name,
                        "mixed_scripts": is_mixed_script(host.name),
                        "instance": host.instance,
                        "addresses": list(host.addresses),
                        "port": host.port,
                        "fingerprint": fp,
                        "version": host.version,
                        **({"probe": probed} if probed is not None else {}),
                    },
                    ensure_ascii=False,
                )
            )
        else:
            shown = display_name(host.name)
            print(f"{shown:20} {', '.join(host.addresses)} port {host.port}  {fp or '-'}")
            for address, outcome in (probed or {}).items():
                print(f"    {address:40} {outcome}")
    if not hosts:
        # nothing found is a failure a script must see: exit 2, as join does
        from p2pchat.errors import DiscoveryError

        raise DiscoveryError(
            f"no p2pchat host found within {args.timeout:g} s: {report.describe()}"
        )
    return 0

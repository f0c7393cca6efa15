"""The small commands: ``trust list|forget|verify`` and ``discover``.

``trust list`` flags a pinned name that mixes scripts (``NAME[mixed
scripts]``, and which scripts) and one that looks like another pin's name
(two keys under one name to the eye: forget the one that is not theirs)."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from p2pchat.room import (
    HostQuery,
    Pin,
    TrustStore,
    display_name,
    forget_peer,
    format_fingerprint,
    is_mixed_script,
    load_identity,
    name_scripts,
    parse_fingerprint,
)

__all__ = ["run_discover", "run_trust"]


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def run_trust(args: argparse.Namespace, store: TrustStore, home: Path) -> int:
    """``trust list|forget|verify``; an unknown peer is a usage error (exit 2),
    and so is a name several pins go by; a ``verify`` not answered yes is 1."""
    from p2pchat.errors import ConfigError, TrustError

    try:
        return _trust(args, store, home)
    except TrustError as exc:
        raise ConfigError(str(exc)) from exc


def _trust(args: argparse.Namespace, store: TrustStore, home: Path) -> int:
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
        for pin, files in forget_peer(store, home, args.peer):
            also = f" and {files} unfinished file(s) sent to that key" if files else ""
            print(f"forgot {display_name(pin.name)} {format_fingerprint(pin.fingerprint)}{also}")
        return 0
    return _verify(args, store, home)


def _verify_pins(store: TrustStore, text: str) -> list[Pin]:
    """The pins ``text`` means: a whole fingerprint, ``NAME@FP`` (a name, or a
    look-alike, whose key starts with FP), or a name (and its look-alikes)."""
    from p2pchat.errors import ConfigError

    try:
        pin = store.get(parse_fingerprint(text))
    except ConfigError:
        pass
    else:
        return [pin] if pin is not None else []
    query = HostQuery.parse(text)
    pins = [p for p in store.by_name(query.name) if query.fits(p.fingerprint)]
    if not pins and query.prefix is not None:  # a name with an "@" of its own
        pins = store.by_name(query.text)
    return pins


def _short(fp: bytes, others: list[bytes]) -> str:
    """The shortest start of ``fp`` (groups of four) no other of ``others`` has."""
    shown = format_fingerprint(fp)
    length = 4
    rest = [format_fingerprint(o) for o in others if o != fp]
    while length < len(shown) and any(o.startswith(shown[:length]) for o in rest):
        length += 5
    return shown[:length]


def _verify(args: argparse.Namespace, store: TrustStore, home: Path) -> int:
    """Show both fingerprints and the last SAS, then ask (or ``--yes``)."""
    from p2pchat.errors import P2PChatError, TrustError

    pins = _verify_pins(store, args.peer)
    if not pins:
        raise TrustError(f"no pinned peer named {args.peer!r} (see 'p2pchat trust list')")
    if len(pins) > 1:
        base = HostQuery.parse(args.peer).name
        fps = [p.fingerprint for p in pins]
        for p in pins:
            print(
                f"{display_name(p.name):24} {format_fingerprint(p.fingerprint)}  "
                f"p2pchat trust verify {base}@{_short(p.fingerprint, fps)}"
            )
        raise TrustError(
            f"{len(pins)} keys are pinned under names like {args.peer!r}: say which one, "
            f"by the start of its fingerprint (NAME@FP, as listed above)"
        )
    (pin,) = pins
    own = load_identity(home, create=False)
    name = display_name(pin.name)
    state = "verified already" if pin.verified else "not verified yet"
    print(f"{name}: pinned {_when(pin.first_seen)}, {state}")
    labels = ("your fingerprint:", f"{name}'s fingerprint:")
    width = max(len(label) for label in labels) + 1
    print(f"  {labels[0]:{width}}{own.fingerprint_text}")
    print(f"  {labels[1]:{width}}{format_fingerprint(pin.fingerprint)}")
    last = store.last_sas(pin.fingerprint)
    if last is not None:
        print(f"  short authentication string of the last session ({_when(last.at)}): {last.sas}")
    else:
        print(
            "  short authentication string: no session since this version recorded it: "
            "compare the fingerprints"
        )
    where = (
        f"  ({name} sees theirs with 'p2pchat trust verify' and your name, or /verify in a chat)"
    )
    if args.yes:
        print(where)
    else:
        try:  # from the line before the prompt: a Ctrl-C after it is seen is a no
            print(where)
            print(f"Do these match what {name} sees? [y/N] ", end="", flush=True)
            answer = sys.stdin.readline()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a no, and said so
            answer = ""
        if not answer.endswith("\n") or not sys.stdin.isatty():
            print()  # end the prompt's line: no echoed Enter did
        if answer.strip().lower() not in ("y", "yes"):
            raise P2PChatError(
                f"{name} {format_fingerprint(pin.fingerprint)} not marked verified "
                "(only y or yes marks it)"
            )
    store.set_verified(pin.fingerprint, True)
    print(f"marked {name} {format_fingerprint(pin.fingerprint)} as verified")
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

"""Command line: ``p2pchat host|join|send|discover|doctor|id|trust``.

Every expected failure is one clear line on stderr and a non-zero exit code
(README.md, "Exit codes", has the table): 1 failure (the host closed the
chat, connection failed, incompatible version), 2 bad usage or input (a stdin
line that cannot be sent) / no host found / several hosts and none named /
--home unusable or used by another running p2pchat, 3 a key mismatch, a host
proving another name than the one asked for, or a peer refused by trust
settings, 4 messages not delivered within --timeout.
Heavy modules (zeroconf, prompt_toolkit, the protocol) load only when a
command needs them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from p2pchat import __version__

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2


def _fingerprint_arg(text: str) -> bytes:
    from p2pchat.errors import ConfigError
    from p2pchat.room import parse_fingerprint

    try:
        return parse_fingerprint(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected a size in GiB > 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100_000:
        raise argparse.ArgumentTypeError(f"expected a whole number 1-100000, got {text!r}")
    return int(text)


def _count_or_zero(text: str) -> int:
    return 0 if text == "0" else _count(text)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def _default_name() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "someone"
    host = socket.gethostname().split(".")[0]
    return f"{user}@{host}"[:64] if host else user[:64]


def _add_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=None, help="your display name (default: user@host)")
    parser.add_argument(
        "--allow-mixed-scripts",
        action="store_true",
        help="accept a --name whose letters mix scripts (Latin with Cyrillic, say): "
        "others see it flagged as NAME[mixed scripts]",
    )


def check_own_name(name: str, allow_mixed: bool) -> str:
    """``--name``, unless its letters mix scripts (a Cyrillic o typed on the
    wrong keyboard layout, say): everyone would see it flagged as a possible
    impersonation, so that takes ``--allow-mixed-scripts``. ConfigError (exit 2)."""
    from p2pchat.errors import ConfigError
    from p2pchat.room import MIXED_MARK, is_mixed_script, name_scripts

    if is_mixed_script(name) and not allow_mixed:
        scripts = " and ".join(sorted(name_scripts(name)))
        raise ConfigError(
            f"--name {name!r} mixes {scripts} letters, which others would see flagged "
            f"as {name}{MIXED_MARK}: use letters of one script, or --allow-mixed-scripts"
        )
    return name


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home",
        metavar="DIR",
        help="directory holding this identity's key and pins "
        "(default: $P2PCHAT_HOME, else the user data directory)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="print log records on stderr: -v warnings and info, -vv debug too "
        "(without it, or on the chat screen, they go only to --log-file; /log shows them)",
    )
    common.add_argument("--log-file", metavar="PATH", help="write logs to PATH (no secrets)")

    net = argparse.ArgumentParser(add_help=False)
    net.add_argument(
        "--interface",
        metavar="ADDR|IFNAME",
        action="append",
        help="serve/browse only on this interface or address (repeatable); "
        "'--interface 127.0.0.1' keeps everything on this machine",
    )
    net.add_argument(
        "--json", action="store_true", help="one JSON object per line on stdout for every event"
    )
    net.add_argument(
        "--require-known", action="store_true", help="refuse peers that are not pinned yet"
    )

    receive = argparse.ArgumentParser(add_help=False)
    receive.add_argument(
        "--accept-files",
        metavar="DIR",
        help="accept every file offered to you, from anyone, into DIR (created if need be; "
        "nothing there is ever overwritten). Without it the chat screen asks (/accept), "
        "line and JSON mode refuse",
    )
    receive.add_argument(
        "--download-dir",
        metavar="DIR",
        help="where files accepted on the chat screen (/accept) go (default: "
        "$P2PCHAT_DOWNLOADS, else your downloads directory)",
    )
    receive.add_argument(
        "--files-quota",
        type=_gib,
        metavar="GIB",
        default=10.0,
        help="room for unfinished incoming files (accepted ones at full size, and the "
        ".part files kept for resuming), in GiB (default: 10); senders met for the first "
        "time share a quarter of it",
    )

    parser = argparse.ArgumentParser(
        prog="p2pchat",
        description="End-to-end encrypted chat for devices on one local network. "
        "One person runs 'p2pchat host', others run 'p2pchat join'.",
        epilog="Exit codes: 0 done; 1 failed (or 'trust verify' not answered yes), or the host "
        "closed the chat; 2 bad usage or "
        "input (a line that cannot be sent), no host found, several and none named, --home "
        "unusable or used by another running p2pchat; 3 refused for trust (key mismatch, "
        "--require-known); 4 not delivered within --timeout (or when stopped); 130 "
        "interrupted (Ctrl-C before there is a chat to leave). README.md has every cause.",
    )
    parser.add_argument("--version", action="version", version=f"p2pchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    host = sub.add_parser(
        "host",
        parents=[common, net, receive],
        help="host a chat: run the relay and advertise it on the LAN",
        description="Start a relay on this machine, advertise it over mDNS/DNS-SD and join "
        "the chat as NAME. In line mode (stdin not a terminal) every stdin line is sent; "
        "the host keeps serving after stdin ends until Ctrl-C/SIGTERM.",
    )
    _add_name(host)
    host.add_argument(
        "--port",
        type=_port,
        default=None,
        help="TCP port to listen on; 0: any free port (default: 47474, or a free port "
        "if that one is taken)",
    )
    limits = host.add_argument_group("relay limits")
    limits.add_argument(
        "--max-participants", type=_count, default=64, metavar="N", help="default: 64"
    )
    limits.add_argument(
        "--max-unregistered",
        type=_count,
        default=64,
        metavar="N",
        help="connections not registered yet; over it the oldest is evicted (default: 64)",
    )
    limits.add_argument(
        "--reserved-slots",
        type=_count_or_zero,
        default=16,
        metavar="N",
        help="of the participants, places only people you have pinned may take "
        "(at most a quarter; default: 16)",
    )
    limits.add_argument(
        "--max-per-source",
        type=_count,
        default=8,
        metavar="N",
        help="participants, and unregistered connections, from one address "
        "(this machine's own 127.0.0.1/::1 are not counted; default: 8)",
    )
    limits.add_argument(
        "--max-per-key",
        type=_count,
        default=4,
        metavar="N",
        help="registrations of one identity key; a newer one replaces the oldest (default: 4)",
    )
    limits.add_argument(
        "--register-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds a new connection has to register (default: 10)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=_positive,
        default=60.0,
        metavar="S",
        help="drop a participant silent this long; pinged after a third of it (default: 60)",
    )
    limits.add_argument(
        "--rate-limit",
        type=_positive,
        default=1024.0,
        metavar="MIB_S",
        help="per-connection MiB/s before the relay stops reading it for a while "
        "(default: 1024, above what loopback file transfers reach)",
    )

    join = sub.add_parser(
        "join",
        parents=[common, net, receive],
        help="find a host on the LAN and join its chat",
        description="Browse the LAN for hosts and join one. In line mode every stdin line is "
        "sent, every received message is printed as 'NAME: TEXT'; join exits 0 once stdin "
        "ends and everything sent was delivered.",
    )
    join.add_argument(
        "hostname",
        nargs="?",
        metavar="NAME[@FP]",
        help="join the host with this name; among several of that name, NAME@FP picks "
        "the one whose fingerprint starts with FP (4 characters or more, as 'p2pchat id' "
        "shows it, dashes optional: bob@JG3F). Once a host is pinned, NAME finds its key",
    )
    _add_name(join)
    join.add_argument(
        "--connect",
        metavar="ADDR[:PORT]",
        help="skip discovery and connect to ADDR (port 47474 unless given)",
    )
    join.add_argument(
        "--timeout",
        type=_positive,
        default=10.0,
        help="seconds for discovery and the first connection, and for delivery after "
        "stdin ends (default: 10)",
    )
    join.add_argument(
        "--expect-fingerprint",
        metavar="FP",
        type=_fingerprint_arg,
        help="the host's fingerprint ('p2pchat id' on the host); refuse any other key",
    )

    send = sub.add_parser(
        "send",
        parents=[common, net],
        help="send a file to one participant, then exit",
        description="Join the chat (finding the host like 'join', or at --connect), wait for "
        "a secure session with NAME, offer PATH, send it end-to-end encrypted and exit 0 once "
        "NAME has checked its SHA-256. Run again with the same file, it resumes where the "
        "last run stopped.",
    )
    send.add_argument("path", metavar="PATH", help="the file to send")
    send.add_argument("--to", required=True, metavar="NAME", help="the participant to send it to")
    _add_name(send)
    send.add_argument(
        "--connect",
        metavar="ADDR[:PORT]",
        help="skip discovery and connect to ADDR (port 47474 unless given)",
    )
    send.add_argument(
        "--timeout",
        type=_positive,
        default=60.0,
        help="seconds to find the host and NAME, and the longest the transfer may make no "
        "progress (NAME deciding, gone, or not answering) before giving up (default: 60)",
    )
    send.add_argument(
        "--expect-fingerprint",
        metavar="FP",
        type=_fingerprint_arg,
        help="the host's fingerprint ('p2pchat id' on the host); refuse any other key",
    )
    send.add_argument(
        "--limit-rate",
        type=_positive,
        metavar="MIB_S",
        help="send at most this many MiB per second (default: as fast as the network goes)",
    )
    send.set_defaults(hostname=None)

    disc = sub.add_parser(
        "discover",
        parents=[common],
        help="list the hosts seen on the LAN",
        description="Browse for p2pchat hosts for --timeout seconds and list them; "
        "exit 2 if none is found.",
    )
    disc.add_argument("--timeout", type=_positive, default=2.0, help="seconds (default: 2)")
    disc.add_argument("--json", action="store_true", help="one JSON object per host")
    disc.add_argument(
        "--interface", metavar="ADDR|IFNAME", action="append", help="browse only here"
    )
    disc.add_argument(
        "--probe", action="store_true", help="also try a TCP connection to each address found"
    )

    doctor = sub.add_parser(
        "doctor",
        parents=[common],
        help="check this machine's side of discovery and say what to do",
        description="List the interfaces a host here would advertise and skip (and why), "
        "browse for hosts while counting every mDNS answer heard, probe each address of "
        "each host found, and give one line of advice. Exit 0 when a host was found and "
        "reached, 1 when one was found but not reached, 2 when none was found.",
    )
    doctor.add_argument("--timeout", type=_positive, default=3.0, help="seconds (default: 3)")
    doctor.add_argument("--json", action="store_true", help="one JSON object")
    doctor.add_argument(
        "--interface", metavar="ADDR|IFNAME", action="append", help="browse only here"
    )

    sub.add_parser(
        "id",
        parents=[common],
        help="print this device's fingerprint",
        description="Print this device's identity fingerprint (creating the key if needed).",
    )

    trust = sub.add_parser(
        "trust",
        parents=[common],
        help="manage pinned peers",
        description="List, forget or verify (compare, then mark) the peers pinned on first "
        "contact.",
    )
    tsub = trust.add_subparsers(dest="trust_command", metavar="ACTION", required=True)
    tsub.add_parser("list", parents=[common], help="list pinned peers")
    forget = tsub.add_parser(
        "forget",
        parents=[common],
        help="forget a pinned peer (and the unfinished files remembered for it)",
    )
    forget.add_argument("peer", metavar="NAME|FP")
    verify = tsub.add_parser(
        "verify",
        parents=[common],
        help="compare fingerprints and the last SAS with a pinned peer, then mark it verified",
        description="Show your fingerprint, the peer's and the short authentication string "
        "of your last session with it, and ask whether they match what the peer sees; only "
        "y or yes marks it verified (exit 0), anything else leaves it as it was (exit 1). "
        "When several pinned keys go by that name (or names that look like it), they are "
        "listed: name one by the start of its fingerprint, NAME@FP.",
    )
    verify.add_argument("peer", metavar="NAME|NAME@FP|FP")
    verify.add_argument(
        "--yes",
        action="store_true",
        help="mark it verified without asking (for scripts; what to compare is still shown)",
    )
    return parser


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so that on the chat
    screen a log line goes through prompt_toolkit and not across the prompt."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(args: argparse.Namespace) -> None:
    """Log records go to --log-file, or to stderr with -v; without either,
    nowhere (stderr has p2pchat's own status lines only). The chat screen
    takes the stderr handler away while it runs (faces/tui.py)."""
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handlers: list[logging.Handler] = []
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file, encoding="utf-8"))
        level = min(level, logging.INFO)
    elif args.verbose:
        handlers.append(_StderrHandler())
    else:
        handlers.append(logging.NullHandler())  # not logging's last resort on stderr
    logging.basicConfig(
        level=level, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.verbose < 2:
        logging.getLogger("zeroconf").setLevel(logging.ERROR)
        logging.getLogger("asyncio").setLevel(logging.ERROR)


def _run_command(args: argparse.Namespace) -> int:
    from p2pchat.room import TrustStore, load_identity, resolve_home

    if getattr(args, "name", None) is not None:
        check_own_name(args.name, args.allow_mixed_scripts)
    home = resolve_home(args.home)
    if args.command == "trust":
        from p2pchat.faces.trustcmd import run_trust

        return run_trust(args, TrustStore.open(home), home)
    identity = load_identity(home)  # created on first use, for every command
    if args.command == "id":
        print(identity.fingerprint_text)
        return 0
    if args.command == "discover":
        from p2pchat.faces.trustcmd import run_discover

        return asyncio.run(run_discover(args))
    if args.command == "doctor":
        from p2pchat.faces.doctor import run_doctor

        return asyncio.run(run_doctor(args))
    if getattr(args, "name", None) is None:
        args.name = _default_name()  # as it is: flagged if it mixes scripts, not refused
    if args.command == "send":
        from p2pchat.faces.send import run_send

        return asyncio.run(run_send(args))
    from p2pchat.faces.chat import run_host, run_join

    return asyncio.run(run_host(args) if args.command == "host" else run_join(args))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(args)
    from p2pchat.errors import ExitCode, describe_error

    try:
        return int(_run_command(args))
    except KeyboardInterrupt:
        # a chat handles Ctrl-C itself (leaving is 0); anywhere else nothing
        # was done or found, and 0 would say it was
        print("p2pchat: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except asyncio.CancelledError as exc:
        from p2pchat.faces.chat import INTERRUPT

        if exc.args != (INTERRUPT,):  # not ours: a bug, with its traceback
            raise
        print("p2pchat: interrupted", file=sys.stderr)  # (before a chat: see install_stop)
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # ours and OSError become one line; anything else re-raises
        line, code = describe_error(exc)
        print(f"p2pchat: {line}", file=sys.stderr)
        return int(code)

"""An echo bot: joins a p2pchat room and answers every message.

Run it beside a host (on loopback here; drop --interface on a real LAN)::

    p2pchat host --name bob --interface 127.0.0.1
    python examples/echo_bot.py --name echo --interface 127.0.0.1

It uses nothing but ``import p2pchat``: a Room, its events, and send. It
prints one line per event it handles and exits 0 after ``--count`` answers
(each acknowledged by its recipient), or with the room's exit code if the
room ends first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import p2pchat


async def run(args: argparse.Namespace) -> int:
    room = p2pchat.Room.join(
        name=args.name,
        home=args.home,
        host=args.host,
        connect=args.connect,
        interfaces=args.interface or [],
        timeout=args.timeout,
    )
    answered: list[bytes] = []
    async with room:
        print(f"echo bot {room.name} joined", flush=True)
        async for event in room.events():
            if isinstance(event, p2pchat.MessageReceived):
                print(f"{event.peer.name} said {event.text!r}", flush=True)
                answered.append(await room.send(f"echo: {event.text}", to=event.peer.fingerprint))
                if len(answered) >= args.count:
                    break
            elif isinstance(event, p2pchat.SessionReady):
                print(f"secure session with {event.peer.name}", flush=True)
            elif isinstance(event, p2pchat.RoomEnded):
                print(f"room ended: {event.reason}", file=sys.stderr, flush=True)
                return event.exit_code
        delivered = await room.wait_for(lambda: room.all_delivered, args.timeout)
    print("all answers delivered" if delivered else "some answers not delivered", flush=True)
    return 0 if delivered else int(p2pchat.ExitCode.UNDELIVERED)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="echo")
    parser.add_argument("--home", help="identity directory (default: the user data directory)")
    parser.add_argument("--host", help="join the host with this name")
    parser.add_argument("--connect", metavar="ADDR:PORT", help="skip discovery")
    parser.add_argument("--interface", action="append", help="browse only here (repeatable)")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=1, help="answers before exiting")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args))
    except p2pchat.P2PChatError as exc:  # an expected failure: one line, its exit code
        print(f"echo bot: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

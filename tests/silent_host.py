"""A relay whose host registers and then never answers a handshake, for
tests/test_exit_codes.py: a joiner connects and waits for a secure session
that does not come. ``python silent_host.py HOME`` prints the port (loopback
only) and serves until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from p2pchat.config import MAX_FRAME
from p2pchat.net.relay import Relay
from p2pchat.proto.framing import FrameDecoder
from p2pchat.proto.messages import parse_body
from p2pchat.room.participant import connect_and_register
from p2pchat.store.identity import load_identity


async def main(home: Path) -> None:
    identity = load_identity(home)
    relay = Relay(owner_key=identity.public_der)
    ((_, port),) = await relay.async_start(["127.0.0.1"], 0)
    decoder = FrameDecoder(MAX_FRAME, parse_body)
    reader, writer, _, _ = await connect_and_register(
        "127.0.0.1", port, 5.0, None, decoder, identity, "bob"
    )
    print(port, flush=True)
    while await reader.read(65536):  # the joiner's handshake: read, never answered
        pass
    writer.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))

"""The sans-I/O protocol core: bytes in, events out; no sockets, clocks or files."""

"""``python -m p2pchat``."""

from __future__ import annotations

import sys

from p2pchat.faces.cli import main

if __name__ == "__main__":
    sys.exit(main())

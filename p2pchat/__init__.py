"""p2pchat: serverless, end-to-end encrypted chat for devices on one local network.

Importing the package loads nothing heavy: the CLI, UI and zeroconf load only
when a command needs them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"

"""magpie: a self-hosted, Hackle-compatible server for user properties, consent and push."""

from __future__ import annotations

__version__ = "0.1.0"

from magpie.app import MagpieApp, create_app
from magpie.config import Settings

__all__ = ["MagpieApp", "Settings", "__version__", "create_app"]

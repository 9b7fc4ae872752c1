"""magpie: a self-hosted, Hackle-compatible server for user properties, consent and push."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from magpie.app import MagpieApp, create_app
    from magpie.config import Settings

__all__ = ["MagpieApp", "Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Exported lazily: the writer's child process imports ``magpie.store`` and must not pay
    # for the whole app (Starlette, the dispatcher, the providers' HTTP clients).
    if name in ("MagpieApp", "create_app"):
        from magpie import app

        return getattr(app, name)
    if name == "Settings":
        from magpie.config import Settings

        return Settings
    raise AttributeError(f"module 'magpie' has no attribute {name!r}")

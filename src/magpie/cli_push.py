"""CLI commands for campaigns, push tokens and statistics."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(parsers: list[Callable[[Any, argparse.ArgumentParser], None]]) -> None:
    del parsers[:]

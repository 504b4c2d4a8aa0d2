"""Shared pieces of the command line: settings from the context, errors, output."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline.config import Settings, load_settings
from pipeline.errors import FatalError, PipelineError

console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def settings_of(ctx: click.Context) -> Settings:
    """Settings loaded once per invocation, with command-line overrides applied."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(**obj.get("overrides", {}))
        logging.getLogger().setLevel(
            obj["settings"].log_level if not obj.get("log_level") else obj["log_level"]
        )
    settings: Settings = obj["settings"]
    return settings


def fail(message: str, code: int = 1) -> None:
    """Print an error the way every command does and exit."""
    console.print(f"[bold red]error:[/] {message}")
    raise SystemExit(code)


def handle_errors(func: F) -> F:
    """Turn pipeline errors into a one-line message and a non-zero exit."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FatalError as exc:
            fail(str(exc), 2)
        except PipelineError as exc:
            fail(str(exc), 1)
        return None

    return wrapper  # type: ignore[return-value]

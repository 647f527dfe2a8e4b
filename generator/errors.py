"""The small exception hierarchy the CLI turns into one clear line on stderr (never a traceback)."""

from __future__ import annotations

import click


class LLMMemoryError(click.ClickException):
    """Base class: a problem the user can fix. Printed as 'Error: message', exit code 2."""

    exit_code = 2


class InputError(LLMMemoryError):
    """A bad option value, an unknown id, an unreadable or malformed config."""


class CatalogInvalid(LLMMemoryError):
    """The catalog under data/ has problems; each was already printed as path:line:column: message."""

    exit_code = 1


class BuildError(LLMMemoryError):
    """The site could not be built; the previous site is left untouched."""

    exit_code = 1

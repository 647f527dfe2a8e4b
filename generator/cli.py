"""The command line: thin wrappers that parse options, call the library, and print."""

from __future__ import annotations

from typing import Any

import click

from . import __version__
from .catalog.commands import check, import_config, schema
from .commands_estimate import estimate
from .errors import InputError
from .site.commands import build, serve
from .trace.command import trace


# click >= 8.2 shows the help for a bare `llm-memory` by raising this UsageError subclass: keep it.
_HELP_ERRORS = tuple(getattr(click.exceptions, n) for n in ("NoArgsIsHelpError",) if hasattr(click.exceptions, n))


def _one_line(error: click.UsageError) -> click.UsageError | InputError:
    """A usage error as the README promises it: one line on stderr ("Error: ... (see ... --help)"), exit 2,
    instead of click's usage block."""
    if isinstance(error, _HELP_ERRORS):
        return error
    message = " ".join(error.format_message().split())
    where = error.ctx.command_path if error.ctx is not None else "llm-memory"
    return InputError(f"{message} (see '{where} --help')")


class _Group(click.Group):
    """Turns every usage error, of the group or of a command, into one line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            raise _one_line(e) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            raise _one_line(e) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llm-memory")
def main() -> None:
    """How much memory an LLM needs, in which precision, for which job, and which GPUs can run it."""


for _command in (estimate, check, schema, import_config, build, serve, trace):
    main.add_command(_command)

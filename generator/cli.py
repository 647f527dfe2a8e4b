"""The command line: thin wrappers that parse options, call the library, and print."""

from __future__ import annotations

import click

from . import __version__
from .catalog.commands import check, import_config, schema
from .commands_estimate import estimate
from .site.commands import build, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llm-memory")
def main() -> None:
    """How much memory an LLM needs, in which precision, for which job, and which GPUs can run it."""


for _command in (estimate, check, schema, import_config, build, serve):
    main.add_command(_command)

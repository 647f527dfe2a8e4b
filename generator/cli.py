"""The command line: thin wrappers that parse options, call the library, and print."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llm-memory")
def main() -> None:
    """How much memory an LLM needs, in which precision, for which job, and which GPUs can run it."""


def _register() -> None:
    from .commands_estimate import estimate

    main.add_command(estimate)
    try:
        from .catalog.commands import check, import_config, schema
    except ImportError:  # pragma: no cover - while the catalog commands are being written
        return
    main.add_command(check)
    main.add_command(schema)
    main.add_command(import_config)


_register()

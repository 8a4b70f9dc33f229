"""``indextts-train``: one command line for every stage of the pipeline.

Every subcommand reads the same run configuration (``--config run.yaml``, else the bundled demo's),
applies its flags and any ``--set section.key=value`` overrides.  A stage's flags are made from
its config section (:mod:`flows.flags`: a field is a flag), so the commands below declare only the
local files they read or write.  ``run`` runs the ``finetune`` flow; each stage command runs that
stage's task as a flow run of its own (:mod:`flows.stage`): the same code, cache, artifact store
and MLflow tracking as the flow.  The commands live in :mod:`flows.commands`; what they print in
:mod:`flows.printing`.

Every command writes a full log file (tracebacks, library warnings, DEBUG lines) and keeps the
console to one line per failure (:mod:`flows.cli_logging`): a command that fails ends with
``error: <message>`` and ``full log: <path>``, whatever the exception (one nobody expected: exit
code 1, ``error: <Type>: <message>``; ``--verbose`` shows its traceback).
"""

from __future__ import annotations

import os
from typing import Annotated, Any

# Idle OpenMP threads sleep instead of spinning (read once, when torch's libgomp loads: before any import of
# torch).  Spinning threads make a command many times slower whenever anything else wants a core: one tiny-model
# synthesis took 7.7-11 s instead of 0.46-0.5 s next to a test run on 2 cores.  The user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer
from typer.core import TyperGroup

from flows import cli_logging
from flows.commands import data, model, ops, speech


class Commands(TyperGroup):
    """The command group: an exception a command did not expect ends as one ``error:`` line, exit code 1."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # exits, Ctrl-C, usage errors: click's own
            raise
        except Exception as e:  # noqa: BLE001 - the traceback goes to the log file, not the user's screen
            cli_logging.report_error(cli_logging.unexpected_error(e), e)
            raise typer.Exit(code=1) from None
        cli_logging.report_success()
        return result


app = typer.Typer(
    cls=Commands,
    name="indextts-train",
    help="Teach IndexTTS2 a new language: (curate ->) ingest -> corpus -> tokenizer -> preprocess -> pairs -> train -> export -> "
         "evaluate -> promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: flag names never truncated, readable at 80 columns
)


@app.callback()
def _main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging on the console, tracebacks and library warnings included.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    cli_logging.setup(ctx.invoked_subcommand, verbose=verbose, quiet=quiet)


app.command()(ops.run)
app.command()(data.download)
app.command()(data.curate)
app.command()(data.ingest)
app.command()(data.corpus)
app.command("extend-bpe")(data.extend_bpe)
app.command()(data.preprocess)
app.command("import")(data.import_)
app.command()(data.pairs)
app.command("build-pairs", help="The seed's name for 'pairs' (same command).")(data.pairs)
app.command()(model.train)
app.command()(model.evaluate)
app.command()(speech.generate)
app.command()(speech.synthesize)
app.command()(speech.normalize)
app.command()(ops.ui)
app.command()(ops.verify)
app.command("config")(ops.show_config)


def main() -> None:  # pragma: no cover - console-script shim
    app()


if __name__ == "__main__":  # pragma: no cover - python -m flows.cli
    main()

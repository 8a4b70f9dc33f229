"""``indextts-train``: one command line for every stage of the pipeline.

Every subcommand reads the same run configuration (``--config run.yaml``, else the bundled demo's),
applies its flags and any ``--set section.key=value`` overrides.  A stage's flags are made from
its config section (:mod:`flows.flags`: a field is a flag), so the commands below declare only the
local files they read or write.  ``run`` runs the ``finetune`` flow; each stage command runs that
stage's task as a flow run of its own (:mod:`flows.stage`): the same code, cache, artifact store
and MLflow tracking as the flow.  The commands live in :mod:`flows.commands`; what they print in
:mod:`flows.printing`.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.logging import RichHandler

from flows.commands import data, model, ops, speech
from flows.printing import err_console

app = typer.Typer(
    name="indextts-train",
    help="Teach IndexTTS2 a new language: ingest -> corpus -> tokenizer -> preprocess -> pairs -> train -> export -> "
         "evaluate -> promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: flag names never truncated, readable at 80 columns
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
                        force=True)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "matplotlib", "PIL", "httpx", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


app.command()(ops.run)
app.command()(data.download)
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

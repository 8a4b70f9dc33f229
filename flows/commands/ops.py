"""The pipeline and operations commands: ``run`` (the whole flow), ``ui`` (MLflow and TensorBoard),
``verify`` (the artifact store, in full) and ``config`` (the resolved configuration).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli_support import ConfigOpt, SetOpt, fail, load_run_config, prefect_defaults
from flows.flags import config_flags
from flows.printing import console, err_console, print_summary
from indextts_core.config import dump_config
from indextts_core.errors import InputError


@config_flags("language", "run", "orchestration")
def run(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Run the pipeline as the Prefect flow 'finetune' (no --config: the bundled demo's settings).

    Without PREFECT_API_URL, Prefect starts a temporary local server for the run; with it, the run
    is recorded on that server.  Stages whose inputs did not change are taken from the cache.
    """
    try:
        cfg = load_run_config(config, overrides, flags)
    except InputError as e:
        raise fail(e) from None
    prefect_defaults()
    from flows.finetune import finetune

    try:
        summary = finetune(cfg)
    except InputError as e:
        raise fail(e) from None
    from flows.cached_answers import remember

    remember(cfg, summary.results, {})  # so that each stage's command answers from what this run computed
    print_summary(summary)



def ui(
    port: Annotated[int, typer.Option(help="MLflow UI port.")] = 5000,
    tensorboard_port: Annotated[int, typer.Option(help="TensorBoard port.")] = 6006,
    tensorboard: Annotated[bool, typer.Option(help="Also start TensorBoard on the run's training folders.")] = True,
    logdir: Annotated[Path | None, typer.Option(
        help="TensorBoard's folder (default: the folder that holds run.output_dir, so every run shows).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Open the run's MLflow UI (one worker, on its tracking store) and TensorBoard; Ctrl-C stops both."""
    from flows.ui import start_services, stop_services, wait_ready

    try:
        cfg = load_run_config(config, overrides)
        services = start_services(cfg, port, tensorboard_port if tensorboard else None, logdir)
    except InputError as e:
        raise fail(e) from None
    stop = False

    def request_stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    try:
        ready = wait_ready(services)
        for s in services:
            console.print(f"{s.name}: {s.url}  (ready in {ready[s.name]} s)", highlight=False)
        console.print("Ctrl-C stops both", highlight=False)
        while not stop and all(s.proc.poll() is None for s in services):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:
        stop_services(services)
        raise fail(e) from None
    stop_services(services)


def verify(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Read every file the artifact store records a sha256 for, in full, and check it (exit 1 on any problem).

    Stages already check by content what they consume; this full pass also finds damage in what no
    run has read lately (directory manifests, the mirrored training checkpoints, feature shards).
    """
    from indextts_core.store.objects import open_store, verify_store

    try:
        cfg = load_run_config(config, overrides)
        store = open_store(cfg.storage.uri, cfg.storage)
        start = time.monotonic()
        problems = verify_store(store)
    except InputError as e:
        raise fail(e) from None
    seconds = time.monotonic() - start
    for line in problems:
        err_console.print(f"damaged: {line}", highlight=False, soft_wrap=True)
    console.print(f"{store.uri}: {len(problems)} problem(s); checked in {seconds:.1f} s", highlight=False,
                  soft_wrap=True)
    if problems:
        raise typer.Exit(code=1)


def show_config(config: ConfigOpt = None, overrides: SetOpt = None) -> None:
    """Print the resolved run configuration as YAML (secrets masked); fails on any invalid field."""
    try:
        cfg = load_run_config(config, overrides)
    except InputError as e:
        raise fail(e) from None
    sys.stdout.write(dump_config(cfg))

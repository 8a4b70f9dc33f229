"""The skeleton every stage task shares, so that a task says only what is particular to its stage.

A stage task is::

    @stage_task("corpus", core.STAGE_VERSION)          # cache key from STAGE_KEYS["corpus"]
    def corpus_task(cfg, dataset, frontend, ctx) -> StageResult:
        with Stage("corpus", cfg, ctx, inputs={"dataset": dataset}) as s:
            result = core.build_corpus(..., s.out, ...)       # the core stage, on local folders
            return s.publish({"lines": ...}, outputs={...}, reports=["stats.json"])

:class:`Stage` opens the artifact store, fetches inputs to local folders, gives the stage a clean
output folder (``<run.output_dir>/<stage>``), opens the stage's MLflow child run (params = the
config fields in the cache key, inputs with their digests), and on :meth:`Stage.publish` uploads the
folder content-addressed, logs metrics, reports and tags, and returns the :class:`StageResult`.
If the body raises, the run is marked FAILED and the reports that exist are still logged (the
evidence of a failed run: rejects, partial reports).

:func:`stage_task` is Prefect's ``@task`` with the shared policies: retries of transient faults,
persisted results, and the cache key built from the named config sections (see
:func:`tasks.keys.config_subset`), the input digests, the stage's code version and the task's
source.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from prefect import task

from indextts_core.config import PipelineConfig
from indextts_core.store.objects import ArtifactStore, open_store
from tasks.artifacts import ArtifactRef, StageResult, fetch_dir, publish_dir
from tasks.context import RunContext
from tasks.keys import STAGE_KEYS, run_params
from tasks.policies import STAGE_TASK_OPTIONS, stage_cache
from tasks.tracking import StageRun, attach_stage_run, close_stage_run, open_stage_run, system_metrics

#: The long stages whose MLflow runs also record the machine's load (``tracking.system_metrics_s``).
SYSTEM_METRICS_STAGES = ("train", "evaluate")

def stage_task(name: str, version: str, ignore: tuple[str, ...] = ("cfg", "ctx")) -> Callable[[Any], Any]:
    """``@task`` for a deterministic stage: cached on its config keys, inputs, version and source."""
    return task(name=name, cache_policy=stage_cache(name, version, STAGE_KEYS[name], ignore=ignore),
                **STAGE_TASK_OPTIONS)


class Stage:
    """One run of a stage task: store, inputs, output folder, MLflow child run, publish.

    ``run_id``: attach to an MLflow run opened earlier by a helper task of the same stage (the
    preprocess plan) instead of opening one.  ``out``: the working folder (default
    ``<run.output_dir>/<stage>``), emptied first unless ``clean`` is false (training resumes in it).
    """

    def __init__(self, name: str, cfg: PipelineConfig, ctx: RunContext,
                 inputs: Mapping[str, ArtifactRef | None] = {}, *, params: Mapping[str, Any] | None = None,
                 tags: Mapping[str, str] | None = None, run_id: str | None = None, out: Path | None = None,
                 clean: bool = True, reports: Iterable[str] = ()):
        self.name, self.cfg, self.ctx = name, cfg, ctx
        self.inputs = {k: v for k, v in inputs.items() if v is not None}
        self.started = time.monotonic()
        self.store: ArtifactStore = open_store(cfg.storage.uri, cfg.storage)
        self.out = out if out is not None else cfg.run.output_dir / name
        self.clean, self.failure_reports = clean, tuple(reports)
        self._params = run_params(cfg, name) | dict(params or {})
        self._tags, self._run_id = dict(tags or {}), run_id
        self.run: StageRun | None = None
        self._monitor: Any = None

    # ------------------------------------------------------------------ context

    def __enter__(self) -> Stage:
        if self.clean and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=not self.clean)
        tracking = self.ctx.tracking
        if tracking is not None:
            self.run = (attach_stage_run(tracking, self._run_id, self.name) if self._run_id
                        else open_stage_run(tracking, self.name, self._tags))
            if not self._run_id:
                self.run.log_params(self._params)
            for key, ref in self.inputs.items():
                self.run.log_input(key, ref.uri, ref.digest, context=_input_context(key, ref))
            if self.name in SYSTEM_METRICS_STAGES:
                self._monitor = system_metrics(tracking, self.run)
                self._monitor.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.run is None:
            return
        if self._monitor is not None:
            self._monitor.__exit__(None, None, None)
        if exc is not None:
            for name in self.failure_reports:  # keep the evidence of a failed run
                if (self.out / name).is_file():
                    self.run.log_artifact(self.out / name, "reports")
        close_stage_run(self.run, "FAILED" if exc is not None else "FINISHED")

    # ------------------------------------------------------------------ helpers

    def fetch(self, ref: ArtifactRef) -> Path:
        """A local folder with an input artifact's files."""
        return fetch_dir(self.store, ref, self.cfg.storage.cache_dir)

    def seconds(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def publish(self, metrics: Mapping[str, float | int], outputs: Mapping[str, str], *,
                reports: Iterable[Path | str] = (), tags: Mapping[str, str] | None = None,
                folder: Path | None = None, data: Mapping[str, Any] | None = None) -> StageResult:
        """Upload the output folder (or ``folder``), log metrics, reports and tags; the stage's result.

        ``reports``: files (paths, or names in the output folder) logged under ``reports/``;
        ``data``: small values the next layer needs (counts, names), carried in the result.
        """
        ref = publish_dir(self.store, folder or self.out, self.name)
        numbers = {**metrics, "seconds": self.seconds()}
        if self.run is not None:
            self.run.log_metrics(numbers)
            for report in reports:
                path = report if isinstance(report, Path) else self.out / report
                self.run.log_artifact(path, "reports")
            self.run.set_tags({"output.uri": ref.uri, "output.digest": ref.digest, **(tags or {})})
        return StageResult(stage=self.name, artifact=ref, metrics=numbers, outputs=dict(outputs),
                           data=dict(data or {}), mlflow_run_id=self.run.run_id if self.run else None,
                           flow_run_id=self.ctx.flow_run_id, seconds=time.monotonic() - self.started)


def _input_context(name: str, ref: ArtifactRef) -> str:
    """MLflow's input context: raw data is a source, models are what they are, the rest trains."""
    if name == "dataset" or ref.stage == "asset:dataset":
        return "source"
    return {"tokenizer": "tokenizer", "base-checkpoint": "base-model", "checkpoint": "base-model"}.get(name, "training")

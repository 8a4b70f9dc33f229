"""The bookkeeping of one pipeline run, so that the flow body reads like the pipeline.

:class:`PipelineRun` opens the MLflow parent run, saves the result-storage block for the store,
runs each stage task with the run's retry/cache options, notices cache hits (and re-runs a stage
whose cached output has gone missing from the store), checks stage outputs out into the run
folder, and at the end writes the summary: a Prefect markdown and table artifact, ``summary.md``
and ``summary.json`` in the run folder, and the same on the MLflow parent run.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import deployment, flow_run
from pydantic import BaseModel

from indextts_core.config import PipelineConfig
from indextts_core.errors import OutputError, StorageError
from indextts_core.utils.fileio import atomic_write, remove_stale_temp_files, write_json
from indextts_core.store.objects import ArtifactStore, CorruptArtifactError, default_cache_dir, open_store
from tasks.artifacts import StageResult, checkout, is_present
from tasks.download import DownloadResult
from tasks.promote import PromotionResult
from tasks.context import RunContext
from tasks.result_storage import result_storage
from tasks.run_names import parent_run_name
from tasks.storage_env import storage_environment
from tasks.tracking import end_run, log_parent_artifact, log_parent_metrics, start_parent_run, tag_run
from tasks.tracking_store import run_link


class StageRow(BaseModel):
    stage: str
    status: str  # ran | cached | reused (download: sources unchanged, nothing fetched) | failed
    seconds: float = 0.0
    output: str = ""
    digest: str = ""
    numbers: str = ""
    mlflow_run_id: str | None = None
    produced_by_flow_run: str | None = None


class RunSummary(BaseModel):
    flow: str = "finetune"
    run_name: str
    flow_run_id: str | None
    status: str
    mlflow_parent_run_id: str | None
    mlflow_link: str | None
    store: str
    output_dir: str
    stages: list[StageRow]
    results: dict[str, Any] = {}

    def markdown(self) -> str:
        lines = [
            f"# {self.flow} `{self.run_name}`: {self.status}",
            "",
            "| stage | status | time (s) | output | numbers | MLflow run |",
            "|---|---|---:|---|---|---|",
        ]
        for r in self.stages:
            lines.append(f"| {r.stage} | {r.status} | {r.seconds:.1f} | `{r.output}` | {r.numbers} | "
                         f"{r.mlflow_run_id or ''} |")
        lines += [
            "",
            f"- MLflow parent run: {self.mlflow_link or 'tracking off'}",
            f"- artifact store: `{self.store}`",
            f"- local outputs: `{self.output_dir}`",
            "- `cached`: inputs, settings and code unchanged, so the stored output of an earlier run "
            "(its MLflow run is listed) was reused; `reused`: sources checked, unchanged, nothing fetched.",
        ]
        return "\n".join(lines) + "\n"


def _numbers(result: Any) -> str:
    if isinstance(result, StageResult):
        keep = ("accepted", "rejected", "speakers", "hours", "val_clips", "vocab_size", "indexed",
                "audio_processed_now", "train_pairs", "val_pairs", "steps", "baseline.loss", "final.loss")
        picked = {k: v for k, v in result.metrics.items() if k in keep or k.endswith(".lines")
                  or (k.startswith("eval.") and k.count(".") == 2 and k.rsplit(".", 1)[1] in ("cer", "speaker_sim"))}
        return ", ".join(f"{k}={round(v, 4) if isinstance(v, float) else v}" for k, v in picked.items())
    if isinstance(result, DownloadResult):
        return ", ".join(f"{k}: {'reused' if v else 'fetched'}" for k, v in result.reused.items())
    if isinstance(result, PromotionResult):
        d = result.decision
        gates = "".join(f"; {g['name']}: {g['status']}" for g in result.gates)
        return f"v{result.version or '-'} -> {result.alias or '-'} ({d['reason']}{gates})"
    return ""


#: Stage metrics worth a column in the MLflow run list, on the parent run as ``<stage>.<metric>``.
HEADLINE = {"ingest": ("accepted", "hours"), "extend-bpe": ("vocab_size",),
            "train": ("steps", "baseline.loss", "final.loss", "exported.loss", "final.mel_top1", "best_value")}


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The run's headline numbers from its stage results: a few per stage, every model's headline
    evaluation numbers (``eval.<model>.<metric>``) and whether the new model was promoted."""
    out: dict[str, float] = {}
    for stage, names in HEADLINE.items():
        result = results.get(stage)
        if isinstance(result, StageResult):
            out |= {f"{stage}.{n}": result.metrics[n] for n in names if isinstance(result.metrics.get(n), int | float)}
    evaluation = results.get("evaluate")
    if isinstance(evaluation, StageResult):
        out |= {k: v for k, v in evaluation.metrics.items() if k.startswith("eval.") and k.count(".") == 2
                and isinstance(v, int | float)}
    promotion = results.get("promote")
    if isinstance(promotion, PromotionResult):
        out["promoted"] = float(promotion.alias == "champion")
    return out


#: The project's loggers: their INFO lines (validation, checkpoints, export, progress) belong in the run's log.
LIBRARY_LOGGERS = ("indextts_core", "tasks", "flows")


def library_logs_at_info() -> None:
    """Prefect attaches its API handler to ``PREFECT_LOGGING_EXTRA_LOGGERS`` but leaves their level to the root
    logger's, WARNING in a worker, so the trainer's INFO lines never reached a deployment run's log.  Give the
    project's loggers INFO, unless a level was set for them on purpose."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)


class PipelineRun:
    """One run of the pipeline inside a Prefect flow (use as a context manager)."""

    def __init__(self, cfg: PipelineConfig, flow_name: str = "finetune"):
        library_logs_at_info()
        self.cfg = cfg
        self.flow_name = flow_name
        self.logger = get_run_logger()
        # the storage.* credentials reach MLflow's and Prefect's S3 clients too (they read only the environment)
        self._env = contextlib.ExitStack()
        exported = self._env.enter_context(storage_environment(cfg.storage))
        try:
            if exported:
                self.logger.info("S3 settings from storage.* for MLflow and Prefect results: %s", ", ".join(exported))
            self.store: ArtifactStore = open_store(cfg.storage.uri, cfg.storage)
            self.rows: list[StageRow] = []
            self.results: dict[str, Any] = {}
            self.flow_run_id = str(flow_run.id) if flow_run.id else None
            self._storage_block = result_storage(cfg.storage)
            tags = {"prefect.flow_run_id": self.flow_run_id or "", "prefect.flow_run_name": flow_run.name or "",
                    "prefect.deployment": deployment.name or ""}
            self.tracking = start_parent_run(cfg, parent_run_name(cfg, flow_name), tags)
            self.ctx = RunContext(flow_run_id=self.flow_run_id, tracking=self.tracking)
            try:
                cfg.run.output_dir.mkdir(parents=True, exist_ok=True)
            except PermissionError as e:
                end_run(self.tracking, status="FAILED")
                raise OutputError(f"run.output_dir {cfg.run.output_dir}: not writable ({e.strerror}); make it "
                                  "writable or choose another run.output_dir") from None
            self._sweep()
        except BaseException:
            self._env.close()
            raise

    def _sweep(self) -> None:
        """Remove what killed runs left half-written: temporary files in the store, the local cache and
        the run folder, abandoned multipart uploads (never visible as results, but they take space)."""
        try:
            removed = self.store.sweep()
        except StorageError as e:  # e.g. no permission to list uploads: not a reason to stop the run
            self.logger.warning("could not clean up abandoned uploads in %s: %s", self.store.uri, e)
            removed = []
        for folder in (self.cfg.storage.cache_dir or default_cache_dir(), self.cfg.run.output_dir):
            removed += [str(p) for p in remove_stale_temp_files(folder)]
        if removed:
            self.logger.info("removed %d temporary file(s) that killed runs left behind: %s", len(removed),
                             ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is not None:
                self._summarise("failed")
                end_run(self.tracking, status="FAILED")
        finally:
            self._env.close()

    def call(self, task: Any, *inputs: Any) -> Any:
        """Run a helper task of a stage (retries as configured, no cache, no summary row)."""
        o = self.cfg.orchestration
        return task.with_options(retries=o.retries, retry_delay_seconds=o.retry_delay_s)(self.cfg, *inputs,
                                                                                          ctx=self.ctx)

    def stage(self, task: Any, *inputs: Any, since: float | None = None, refresh: bool = False) -> Any:
        """Run one stage task; returns its result (from the cache when nothing changed).

        The stage's output is (or, when cached, is checked out to) ``<run.output_dir>/<stage>``.
        ``since``: when the stage's helper tasks started (its row then times them too).  ``refresh``:
        run the task even when its result is cached (and cache what it returns), as
        ``orchestration.refresh_cache`` does for every stage.
        """
        name = task.name
        o = self.cfg.orchestration
        options = dict(result_storage=self._storage_block, retries=o.retries,
                       retry_delay_seconds=o.retry_delay_s, refresh_cache=(o.refresh_cache or refresh) or None)
        start = since if since is not None else time.monotonic()
        state = task.with_options(**options)(self.cfg, *inputs, ctx=self.ctx, return_state=True)
        if state.is_failed() or state.is_crashed():
            self.rows.append(StageRow(stage=name, status="failed", seconds=time.monotonic() - start))
        result = state.result()  # raises the stage's error
        cached = state.name == "Cached"
        problem = self._check_out(name, result, cached) if isinstance(result, StageResult) else None
        if problem:
            self.logger.warning("%s: cached output %s; recomputing", name, problem)
            options["refresh_cache"] = True
            result = task.with_options(**options)(self.cfg, *inputs, ctx=self.ctx)
            cached = False
            self._check_out(name, result, cached)
        self._record(name, result, cached, time.monotonic() - start)
        return result

    def _check_out(self, name: str, result: StageResult, cached: bool) -> str | None:
        """Put the stage's output in the run folder (a cached one always, a new one unless the stage wrote it there);
        for a cached output, why it cannot be used (gone, or damaged: then it is removed from the store), or None.

        The checkout verifies every file against the directory manifest as it places it: that is the one read of
        each file here (a separate check before it would read the whole output twice).
        """
        dest = self.cfg.run.output_dir / name
        if not cached and dest.is_dir():
            return None
        ref = result.artifact
        if cached and not is_present(self.store, ref):
            return f"{ref.uri} is gone from the store"
        try:
            checkout(self.store, ref, dest, self.cfg.storage.cache_dir)
        except CorruptArtifactError as e:
            if not cached:
                raise
            self.store.delete(ref.prefix)  # so the recomputed stage stores a good copy under the same digest
            return f"is damaged ({e})"
        return None

    def _record(self, name: str, result: Any, cached: bool, seconds: float) -> None:
        self.results[name] = result
        row = StageRow(stage=name, status="cached" if cached else "ran", seconds=seconds, numbers=_numbers(result))
        if isinstance(result, StageResult):
            row.output, row.digest = result.artifact.uri, result.artifact.digest
            row.mlflow_run_id, row.produced_by_flow_run = result.mlflow_run_id, result.flow_run_id
        elif isinstance(result, DownloadResult):
            # sources are checked every run; when nothing changed nothing is fetched
            row.status = "reused" if result.all_reused else "ran"
            row.output = ", ".join(f"{k}: {v.uri}" for k, v in result.assets.items())
            row.mlflow_run_id = result.mlflow_run_id
        elif isinstance(result, PromotionResult):
            row.output, row.mlflow_run_id = f"{result.registered_model} v{result.version or '-'}", result.mlflow_run_id
        self.rows.append(row)
        tags = {f"stage.{name}.status": row.status}
        if cached and row.mlflow_run_id:
            tags[f"stage.{name}.produced_by_run"] = row.mlflow_run_id
        tag_run(self.tracking, tags)
        self.logger.info("%s: %s in %.1fs%s", name, row.status, seconds, f" ({row.numbers})" if row.numbers else "")

    def _summarise(self, status: str) -> RunSummary:
        summary = RunSummary(
            flow=self.flow_name, run_name=self.cfg.run.name, flow_run_id=self.flow_run_id, status=status,
            mlflow_parent_run_id=self.tracking.parent_run_id,
            mlflow_link=run_link(self.tracking.tracking_uri, self.tracking.experiment_id, self.tracking.parent_run_id),
            store=self.store.uri, output_dir=str(self.cfg.run.output_dir.resolve()), stages=self.rows,
            results={k: v.model_dump(mode="json") for k, v in self.results.items()},
        )
        md = summary.markdown()
        out = self.cfg.run.output_dir
        stem = "summary" if self.flow_name == "finetune" else f"summary-{self.flow_name}"
        with atomic_write(out / f"{stem}.md") as f:
            f.write(md)
        write_json(out / f"{stem}.json", summary.model_dump(mode="json"))
        try:
            create_markdown_artifact(key=f"{self.flow_name}-summary", markdown=md,
                                     description=f"run {self.cfg.run.name}")
            create_table_artifact(key=f"{self.flow_name}-stages", table=[r.model_dump(mode="json") for r in self.rows],
                                  description="stages of the run: ran or cached")
            log_parent_artifact(self.tracking, out / f"{stem}.md")
            log_parent_artifact(self.tracking, out / f"{stem}.json")
        except Exception:  # noqa: BLE001 - the summary must not hide the run's own outcome
            logging.getLogger(__name__).exception("could not publish the run summary")
        return summary

    def finish(self) -> RunSummary:
        summary = self._summarise("completed")
        if self.tracking is not None:
            try:
                log_parent_metrics(self.tracking, headline_metrics(self.results))
            except Exception:  # noqa: BLE001 - the numbers are in the stage runs too; never fail a finished run
                self.logger.exception("could not log the headline metrics on the parent run")
        end_run(self.tracking, status="FINISHED")
        stem = "summary" if self.flow_name == "finetune" else f"summary-{self.flow_name}"
        self.logger.info("summary written to %s", Path(summary.output_dir) / f"{stem}.md")
        return summary

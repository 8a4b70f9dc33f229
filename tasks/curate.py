"""Curate stage task: long recordings -> a clean, transcribed, segmented dataset for ingest.

Not cached by Prefect, like download: it has to look at the sources every run to notice recordings added
or removed.  It is cheap when nothing changed: each recording's work is a unit in the artifact store
(``curate/units/``), named by the recording's content and the options, and is reused.  The output
folder holds the manifest (its audio: ``store:`` keys of the units' clips, stored once), the rejects and
the report; ingest reads it as a dataset.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from indextts_core.config import PipelineConfig
from indextts_core.curate.process import Tools
from indextts_core.curate.run import curate
from indextts_core.curate.sources import list_recordings
from indextts_core.curate.units import StoredUnits
from indextts_core.curate.vad import Vad
from indextts_core.evaluation.asr import open_transcriber
from indextts_core.evaluation.naturalness import open_naturalness
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.evaluate import device_of
from tasks.policies import STAGE_TASK_OPTIONS, OomRecorder
from tasks.stage import Stage

REPORTS = ("report.json", "report.md", "report.html", "rejects.jsonl")


@task(name="curate", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def curate_task(cfg: PipelineConfig, asr: ArtifactRef | None, ctx: RunContext) -> StageResult:
    c = cfg.curate
    with Stage("curate", cfg, ctx, {"asr": asr}, reports=REPORTS) as s:
        recordings = list_recordings(c, cfg.storage)
        folder: Path | None = Path(c.asr_model) if c.asr_model else (s.fetch(asr) if asr is not None else None)
        judge = (f"path:{c.asr_model}" if c.asr_model else f"sha256:{asr.digest}") if folder is not None else None
        notes = ["the ASR judge is a tiny random model (download.asr: tiny://): its transcripts are noise"
                 ] if asr is not None and not c.asr_model and cfg.download.asr.source.startswith("tiny://") else []

        def load_tools() -> Tools:
            device = device_of(c.device)
            return Tools(transcriber=open_transcriber(folder, "auto", device) if folder is not None else None,
                         naturalness=open_naturalness(c.min_dnsmos is not None, threads=0),
                         vad_factory=Vad, on_backoff=OomRecorder(s.run))

        result = curate(recordings, c, cfg.language, s.out, StoredUnits(s.store), load_tools, judge=judge,
                        dnsmos=c.min_dnsmos is not None, storage=cfg.storage, seed=cfg.run.seed, notes=notes)
        metrics = {"recordings": result.recordings, "recordings_processed": result.processed,
                   "recordings_reused": result.reused, "recordings_failed": result.failed, "kept": result.kept,
                   "rejected": result.rejected, "hours_in": result.hours_in, "hours_kept": result.hours_kept,
                   **{f"rejected.{k}": v for k, v in result.rejected_by_reason.items()},
                   **{f"audio_s_per_s.{k}": v for k, v in result.throughput.items()}}
        if result.judge.cer is not None:
            metrics["judge_cer"] = result.judge.cer
        return s.publish(metrics, reports=REPORTS, tags={"judge.trusted": str(result.judge.trusted).lower()},
                         data={"report": result.report, "judge": result.judge.note},
                         outputs={"manifest": "manifest.jsonl", "rejects": "rejects.jsonl", "report": "report.md",
                                  "listening": "report.html"})

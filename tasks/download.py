"""Download stage task: every asset the run needs, into the artifact store.

Not cached by Prefect on purpose: it must look at the sources every run to notice new data.  It
is cheap when nothing changed (the core stage reuses what the store holds).
"""

from __future__ import annotations

import time

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from indextts_core.config import PipelineConfig
from indextts_core.store.download import configured_assets, download, source_fingerprint
from indextts_core.store.objects import open_store
from tasks.artifacts import ArtifactRef, asset_ref
from tasks.context import RunContext
from tasks.policies import STAGE_TASK_OPTIONS
from tasks.tracking import stage_run


class DownloadResult(BaseModel):
    assets: dict[str, ArtifactRef]
    reused: dict[str, bool]  # asset -> already in the store, unchanged at its source
    commits: dict[str, str] = {}  # hub asset -> the commit its revision named when fetched
    mlflow_run_id: str | None = None

    @property
    def all_reused(self) -> bool:
        return all(self.reused.values())

    def __getitem__(self, name: str) -> ArtifactRef:
        return self.assets[name]

    def get(self, name: str) -> ArtifactRef | None:
        return self.assets.get(name)


@task(name="download", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def download_task(cfg: PipelineConfig, ctx: RunContext) -> DownloadResult:
    start = time.monotonic()
    with stage_run(ctx.tracking, "download") as run:
        assets = download(cfg, open_store(cfg.storage.uri, cfg.storage))
        refs = {name: asset_ref(a) for name, a in assets.items()}
        if run is not None:
            run.log_params({name: src.model_dump(mode="json") for name, src in configured_assets(cfg).items()})
            run.log_metrics({
                "assets": len(assets),
                "assets_reused": sum(a.reused for a in assets.values()),
                "bytes": sum(a.total_bytes for a in assets.values()),
                "seconds": time.monotonic() - start,
            })
            for name, ref in refs.items():
                run.log_input(name, ref.uri, ref.digest, context="source")
            run.set_tags({f"{n}.commit": a.commit for n, a in assets.items() if a.commit})
    return DownloadResult(assets=refs, reused={n: a.reused for n, a in assets.items()},
                          commits={n: a.commit for n, a in assets.items() if a.commit},
                          mlflow_run_id=run.run_id if run else None)


@task(name="dataset-fingerprint", cache_policy=NO_CACHE, **STAGE_TASK_OPTIONS)
def dataset_fingerprint_task(cfg: PipelineConfig) -> str:
    """What the dataset location holds now (listing only, nothing fetched)."""
    return source_fingerprint("dataset", cfg.ingest.source, cfg.storage)

"""The ``finetune`` flow: the whole language-adaptation pipeline on one configuration.

Steps (each a Prefect task with retries for transient faults, cached on its inputs, outputs in the
artifact store, a child MLflow run under this flow run's parent run):

1. download:   base checkpoint, encoders and dataset into the artifact store
2. ingest:     validate every manifest row, split train/val per speaker, dataset report
3. corpus:     the text of the dataset, one file per language, also as the tokenizer will see it
4. extend-bpe: append the new language's pieces to the base tokenizer (base ids kept), audited
5. preprocess: text ids, semantic codes, speaker latents, emotion vectors (new audio only; work
               units in parallel on the configured task runner)
6. pairs:      prompt/target pairs for train and validation
7. train:      fine-tune the GPT (resumable), export the best checkpoint in the official layout,
               register it in the MLflow model registry with its lineage

Run it with ``indextts-train run`` (no server needed: Prefect starts a temporary one), from a
Prefect deployment (``deployments/prefect.yaml``), or directly with ``python -m flows.finetune``.
"""

from __future__ import annotations

import time

from prefect import flow

from flows.runtime import PipelineRun, RunSummary
from indextts_core.config import PipelineConfig
from indextts_core.text.frontend import TextFrontend
from tasks.corpus import corpus_task
from tasks.download import download_task
from flows.preprocess import run_units
from tasks.extend_bpe import extend_bpe_task
from tasks.ingest import ingest_task
from tasks.pairs import pairs_task
from tasks.preprocess import preprocess_plan_task, preprocess_task
from tasks.train import train_task


@flow(name="finetune", log_prints=True)
def finetune(cfg: PipelineConfig = PipelineConfig()) -> RunSummary:  # noqa: B008 - pydantic default: a UI form
    """Teach IndexTTS2 a new language, from raw data to a fine-tuned checkpoint."""
    frontend = TextFrontend().fingerprint()["sha256"]  # the text front-end every stage shares
    with PipelineRun(cfg) as run:
        assets = run.stage(download_task)
        dataset = run.stage(ingest_task, assets["dataset"], checkout_to="dataset")
        corpus = run.stage(corpus_task, dataset.artifact, frontend, checkout_to="corpus")
        tokenizer = run.stage(extend_bpe_task, corpus.artifact, assets["checkpoint"], frontend, checkout_to="tokenizer")
        models = (assets["checkpoint"], assets.get("w2v_bert"), assets.get("semantic_codec"))
        started = time.monotonic()
        plan = run.call(preprocess_plan_task, dataset.artifact, tokenizer.artifact, *models)
        units = run_units(cfg, plan, *models, run.ctx)  # the expensive part: only audio not seen before
        index = run.stage(preprocess_task, dataset.artifact, tokenizer.artifact, *models, frontend, plan, units,
                          since=started)
        pairs = run.stage(pairs_task, index.artifact, checkout_to="processed_data")
        run.stage(train_task, pairs.artifact, tokenizer.artifact, assets["checkpoint"], checkout_to="model")
        return run.finish()


if __name__ == "__main__":
    finetune(PipelineConfig())

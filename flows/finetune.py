"""The ``finetune`` flow: the whole language-adaptation pipeline on one configuration.

Steps (each a Prefect task with retries for transient faults, cached on its inputs, outputs in the
artifact store and in ``<run.output_dir>/<stage>``, a child MLflow run under this flow run's parent):

1. download:   base checkpoint, encoders and dataset into the artifact store
   curate:     (when curate.sources is set) long recordings cut, transcribed and cleaned into a dataset
2. ingest:     validate every manifest row, split train/val per speaker, dataset report
3. corpus:     the text of the dataset, one file per language, also as the tokenizer will see it
4. extend-bpe: append the new language's pieces to the base tokenizer (base ids kept), audited
5. preprocess: text ids, semantic codes, speaker latents, emotion vectors (new audio only; work
               units in parallel on the configured task runner)
6. pairs:      prompt/target pairs for train and validation
7. train:      fine-tune the GPT (resumable), export the best checkpoint in the official layout,
               register it in the MLflow model registry with its lineage
8. evaluate:   the base model, the fine-tuned one and the current champion say the same held-out
               sentences with the same voices: CER/WER (ASR), speaker similarity, durations, stop
               failures per language with intervals; an HTML report with every sample's audio
9. promote:    the new version becomes ``champion`` only if it measurably beats the incumbent,
               ``challenger`` otherwise; the decision and its numbers are recorded on the version

Run it with ``indextts-train run`` (no server needed: Prefect starts a temporary one), from a
Prefect deployment (``deployments/prefect.yaml``), or directly with ``python -m flows.finetune``.
Each step is also a command of its own (``indextts-train ingest``, ...) that runs the same task
(:mod:`flows.stage`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.config_source import read_run_config
from flows.evaluate import promote_stage
from flows.graph import STAGES, StageGraph
from flows.runtime import PipelineRun, RunSummary
from indextts_core.config import PipelineConfig


@flow(name="finetune", log_prints=True)
def finetune(cfg: PipelineConfig = PipelineConfig(),  # noqa: B008 - pydantic default: a UI form
             config: str | None = None, overrides: dict[str, Any] | None = None) -> RunSummary:
    """Teach IndexTTS2 a new language, from raw data to a fine-tuned checkpoint.

    Args:
        cfg: The run configuration (the form), used when ``config`` is empty.
        config: A run YAML that replaces the form: a path (relative to the worker's checkout or the
            image's /opt/indextts-train), an s3:// URI, or variable://NAME for a Prefect Variable.
        overrides: Dotted settings applied on top of ``config`` (``{"train.epochs": 1}``), as ``--set`` does.
    """
    if config:
        cfg = read_run_config(config, cfg.storage, overrides)
        get_run_logger().info("configuration from %s (run %s)", config, cfg.run.name)
    with PipelineRun(cfg) as run:
        stages = StageGraph(run)  # what each stage takes, declared once (flows/graph.py)
        for name in STAGES[: STAGES.index("train") + 1]:  # download, (curate), ingest, ..., train: in pipeline order
            if stages.applies(name):
                stages.result(name)
        champion = stages.champion()
        evaluation = stages.result("evaluate") if cfg.evaluate.enabled else None
        promote_stage(run, stages.result("train"), evaluation, champion)
        return run.finish()


if __name__ == "__main__":
    finetune(PipelineConfig())

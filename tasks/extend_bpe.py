"""Extend-bpe stage task: append the new language's pieces to the base tokenizer (base ids kept).

On an IndexTTS-2.5 base the vocabulary is kept and measured instead (coverage, language choice).
"""

from __future__ import annotations

from pathlib import Path

from indextts_core.config import PipelineConfig
from indextts_core.model.bundle import open_bundle
from indextts_core.text import extend_bpe as core
from indextts_core.text.corpus import read_corpus, read_frontend_corpus, read_official_corpus
from indextts_core.text.encoder import language_choice
from indextts_core.text.frontend import TextFrontend
from indextts_core.text.tiktoken_stage import run_tiktoken_stage
from tasks.artifacts import ArtifactRef, StageResult
from tasks.context import RunContext
from tasks.stage import Stage, stage_task


@stage_task("extend-bpe", core.STAGE_VERSION)
def extend_bpe_task(cfg: PipelineConfig, corpus: ArtifactRef, checkpoint: ArtifactRef, frontend: str,
                    ctx: RunContext) -> StageResult:
    """Mine the corpus stage's front-end text; ``frontend`` (its fingerprint) is in the cache key."""
    e = cfg.extend_bpe
    with Stage("extend-bpe", cfg, ctx, {"corpus": corpus, "checkpoint": checkpoint},
               params={"frontend": frontend[:16]}) as s:
        base = Path(e.base_model) if e.base_model else open_bundle(s.fetch(checkpoint)).tokenizer_path
        fe = TextFrontend()
        languages = e.languages or [cfg.language]
        if base.suffix == ".tiktoken":  # an IndexTTS-2.5 vocabulary: kept, measured, language chosen
            choice = language_choice(cfg.language, e.lang_code, e.lang_row_init)
            v25 = run_tiktoken_stage(base, read_corpus(s.fetch(corpus), languages), choice, s.out, fe)
            if s.run is not None:
                s.run.log_artifact(v25.model_path, "tokenizer")
            return s.publish(v25.metrics(), reports=[v25.report_json, v25.report_md, v25.sidecar_path],
                             tags={"note": v25.note[:500]}, data={"note": v25.note, "release": "2.5",
                                                                  "language_choice": choice.to_dict()},
                             outputs={"tokenizer": v25.model_path.name, "sidecar": v25.sidecar_path.name,
                                      "report": "report.md"})
        text = read_frontend_corpus(s.fetch(corpus), languages)
        result = core.extend_bpe(base, text, core.probe_lines(e.probe_text, fe), s.out / e.output_name, e,
                                 seed=cfg.run.seed, frontend=fe.fingerprint(), report_dir=s.out,
                                 raw_corpus=read_official_corpus(s.fetch(corpus), languages))
        metrics: dict[str, float | int] = {
            "base_size": result.base_size, "vocab_size": result.vocab_size, "model_rows": result.model_rows,
            "chars_added": result.chars_added, "pieces_added": result.pieces_added, "base_drift": result.base_drift,
            "heldout_piece_usage": result.heldout_piece_usage, "stopped_early": int(result.stopped_early),
        }
        for lang, st in result.languages.items():
            if st.unk_char_rate_raw is not None:
                metrics[f"{lang}.unk_char_rate_raw"] = st.unk_char_rate_raw
            metrics |= {f"{lang}.unk_char_rate_before": st.unk_char_rate_before,
                        f"{lang}.unk_char_rate_after": st.unk_char_rate_after,
                        f"{lang}.tokens_per_char_before": st.tokens_per_char_before,
                        f"{lang}.tokens_per_char_after": st.tokens_per_char_after}
        if s.run is not None:
            s.run.log_artifact(result.model_path, "tokenizer")
        reports = [result.report_json, result.report_md, result.report_png, result.sidecar_path]
        return s.publish(metrics, reports=reports,
                         tags={"note": result.note[:500]}, data={"note": result.note},
                         outputs={"tokenizer": result.model_path.name, "sidecar": result.sidecar_path.name,
                                  "report": "report.md", "plot": "report.png"})

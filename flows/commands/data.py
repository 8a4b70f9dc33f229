"""The data commands: ``download``, ``curate``, ``ingest``, ``corpus``, ``extend-bpe``, ``preprocess``, ``import``,
``pairs`` (``build-pairs``).

Each runs its stage as a flow run of its own (:func:`flows.cli_support.run_stage`).  The stage's
settings are flags made from its config section (:mod:`flows.flags`); what is declared here are the
local files a command reads or writes, which it publishes to the artifact store or copies out.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flows.cli_support import (
    ConfigOpt,
    SetOpt,
    copy_result,
    fail,
    keep_evidence,
    load_run_config,
    run_stage,
)
from flows.flags import config_flags
from flows.printing import console, err_console, print_curate_report, print_ingest_report, print_outputs
from indextts_core.config import PipelineConfig
from indextts_core.errors import InputError


@config_flags("download")
def download(
    output_dir: Annotated[Path | None, typer.Option(
        help="Also lay the models out here as the official code expects them: the checkpoint's files at the top, "
             "the encoders, CAMPPlus and BigVGAN in hf_cache/ (the seed's checkpoints/ folder).",
        file_okay=False)] = None,
    pin: Annotated[bool, typer.Option(
        help="Write the commit each hub revision (a branch or tag such as main) named into the --config file, "
        "so later runs fetch exactly these files.")] = False,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Fetch the checkpoint, encoders, synthesis models and dataset into the artifact store (and, with
    --output-dir, a folder laid out as the official code expects it)."""
    from flows.local_inputs import lay_out_checkpoint

    lacking: list[str] = []
    try:
        if pin and config is None:
            raise InputError("--pin writes the commits into the run's YAML: give it with --config")
        cfg = load_run_config(config, overrides, flags)
        result = run_stage(cfg, "download")
        if output_dir is not None:
            lacking = lay_out_checkpoint(cfg, result["assets"], output_dir)
        if pin:
            assert config is not None
            _pin(config, cfg, result.get("commits") or {})
    except InputError as e:
        raise fail(e) from None
    table = Table(title="Assets")
    for col in ("asset", "store", "status"):
        table.add_column(col)
    for name, ref in result["assets"].items():
        table.add_row(name, ref["uri"], "reused" if result["reused"][name] else "fetched")
    console.print(table)
    if output_dir is not None:
        console.print(f"checkpoint folder: {output_dir}", highlight=False)
        if lacking:
            err_console.print(f"{output_dir}: the official inference also needs {', '.join(lacking)}; set the "
                              "download sources that provide them (docs/real-run.md)", highlight=False)


def _pin(config: Path, cfg: PipelineConfig, commits: dict[str, str]) -> None:
    """Replace each hub revision that is not a commit in ``config`` by the commit it named, in place."""
    from indextts_core.store.download import COMMIT_RE, configured_assets, pin_config_text
    from indextts_core.utils.fileio import atomic_write

    sources = configured_assets(cfg)
    found = {n: (src.revision or "", commits[n]) for n, src in sources.items()
             if n in commits and src.revision and not COMMIT_RE.fullmatch(src.revision)}
    if not found:
        console.print(f"{config}: every hub source is already pinned to a commit", highlight=False)
        return
    text, left = pin_config_text(config.read_text(encoding="utf-8"), found, {n: s.source for n, s in sources.items()})
    with atomic_write(config) as f:
        f.write(text)
    for name, (given, commit) in found.items():
        if name not in left:
            console.print(f"{config}: {name} {sources[name].source} {given} -> {commit}", highlight=False)
    for name in left:  # a --set override, or a layout the line editor does not know
        err_console.print(f"{config}: could not edit {name} in place; set {name}: {{source: {sources[name].source}, "
                          f"revision: {found[name][1]}}}", highlight=False)


@config_flags("curate", "language", "run.seed")
def curate(
    output_dir: Annotated[Path, typer.Option(help="Where the manifest, rejects, report and listening page go.")]
    = Path("curated"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Cut long recordings (--source: folders, files, s3:// prefixes; .srt/.vtt/.txt sidecars) into clean,
    transcribed clips and a manifest ingest reads (stage 'curate'); new recordings only on later runs."""
    try:
        cfg = load_run_config(config, overrides, flags)
        if not cfg.curate.sources:
            raise InputError("curate.sources: no recordings given: name a folder, file or s3:// prefix with "
                             "--source (repeatable) or curate.sources in the --config file")
        try:
            result = run_stage(cfg, "curate")
        except InputError:
            keep_evidence(cfg.run.output_dir / "curate", output_dir)
            raise
        copy_result(cfg, result, output_dir)
    except (InputError, ValueError) as e:
        raise fail(e) from None
    print_curate_report(result["data"]["report"], result["metrics"])
    print_outputs("Outputs", {k: output_dir / v for k, v in result["outputs"].items()})


@config_flags("ingest", "run.seed")
def ingest(
    manifest: Annotated[list[Path] | None, typer.Option(
        "--manifest", "-m", help="JSONL manifest, LJSpeech folder or folder of audio + .txt (repeatable; "
        "default: the config's ingest.manifests).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where manifest/train/val/rejects and the report go.")]
    = Path("dataset"),
    format: Annotated[str, typer.Option(help="auto, jsonl, ljspeech or folder.")] = "auto",
    language: Annotated[str | None, typer.Option(help="Language of rows that name none (e.g. am).")] = None,
    speaker: Annotated[str | None, typer.Option(help="Speaker of rows that name none.")] = None,
    field: Annotated[list[str] | None, typer.Option(
        "--field", metavar="OURS=THEIRS", help="The manifests' own name for a field, e.g. --field audio=audio_path "
        "(repeatable; common names such as audio_path and speaker_id are recognised anyway).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Validate manifests, split train/val per speaker, write the dataset report (stage 'ingest')."""
    from flows.local_inputs import store_for, use_manifests

    try:
        cfg = load_run_config(config, overrides, flags)
        pairs = [f.partition("=") for f in field or []]
        bad = [f for f, (ours, eq, theirs) in zip(field or [], pairs) if not (eq and ours and theirs)]
        if bad:
            raise InputError(f"--field {bad[0]!r}: expected OURS=THEIRS, e.g. --field audio=audio_path")
        fields = {ours.strip(): theirs.strip() for ours, _, theirs in pairs}
        if manifest:
            use_manifests(cfg, manifest, store_for(cfg), format, language, speaker, raw=True, fields=fields)
        elif fields:
            for m in cfg.ingest.manifests:
                m.fields = {**m.fields, **fields}
        try:
            result = run_stage(cfg, "ingest")
        except InputError:
            keep_evidence(cfg.run.output_dir / "ingest", output_dir)  # rejects and report of a failed run
            raise
        copy_result(cfg, result, output_dir)
    except (InputError, ValueError) as e:
        raise fail(e) from None
    print_ingest_report(result["data"]["report"])
    if result["metrics"].get("rejected"):
        console.print(f"rejected rows and reasons: {output_dir / 'rejects.jsonl'}")
    print_outputs("Outputs", {k: output_dir / v for k, v in result["outputs"].items()})


@config_flags("corpus")
def corpus(
    manifest: Annotated[list[Path] | None, typer.Option(
        "--manifest", "-m", help="Ingested manifest (dataset/manifest.jsonl) or raw manifest(s) (repeatable; "
        "default: the config's dataset).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where <language>.txt and stats.json go.")] = Path("corpus"),
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Collect the dataset's text, one file per language, with statistics (stage 'corpus')."""
    from flows.local_inputs import store_for, use_manifests

    try:
        cfg = load_run_config(config, overrides, flags)
        given = use_manifests(cfg, manifest, store_for(cfg)) if manifest else {}
        result = run_stage(cfg, "corpus", given)
        copy_result(cfg, result, output_dir)
    except (InputError, ValueError, FileNotFoundError) as e:
        raise fail(e) from None
    table = Table(title="Corpus")
    for col in ("language", "lines", "characters", "unique chars", "file"):
        table.add_column(col)
    for lang, s in result["data"]["stats"].items():
        table.add_row(lang, str(s["lines"]), str(s["characters"]), str(s["unique_characters"]),
                      str(output_dir / s["file"]))
    console.print(table)


@config_flags("extend_bpe", exclude=("extend_bpe.output_name",))
def extend_bpe(
    base_model: Annotated[Path | None, typer.Option(
        help="Base SentencePiece model (default: the checkpoint's bpe.model).")] = None,
    manifests: Annotated[list[Path] | None, typer.Option(
        "--manifests", help="Manifest(s) whose text is mined: dataset/manifest.jsonl or raw ones (repeatable; "
        "default: the config's dataset).")] = None,
    output_model: Annotated[Path, typer.Option(
        help="Extended model to write; its .json sidecar and reports go next to it.")]
    = Path("tokenizers/extended_bpe.model"),
    report_dir: Annotated[Path | None, typer.Option(
        help="Where report.json/.md/.png go (default: next to the model).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Extend the base tokenizer with the new language's pieces; base ids stay byte-identical.

    Why extend? Every base token keeps its id (and its trained embedding), so English and Chinese
    keep working while the new language gets characters first, then useful longer pieces.  Text is
    mined after the model's own front-end, through the corpus stage, as in the flow.
    """
    from flows.local_inputs import publish_files, store_for, use_manifests

    try:
        cfg = load_run_config(config, overrides, flags, **{"extend_bpe.output_name": output_model.name})
        store = store_for(cfg)
        given = use_manifests(cfg, manifests, store) if manifests else {}
        if base_model is not None:  # the base tokenizer alone stands for the checkpoint here
            cfg.extend_bpe.base_model = str(base_model.resolve())
            given["checkpoint"] = publish_files(store, {base_model.name: base_model}, "asset:checkpoint")
        result = run_stage(cfg, "extend-bpe", given)
        if result["metrics"].get("base_size") is None:  # a 2.5 .tiktoken base: kept under its official name
            outputs = result.get("outputs") or {}
            copy_result(cfg, result, output_model.parent, [outputs.get("tokenizer", "x"), outputs.get("sidecar", "x")])
            copy_result(cfg, result, report_dir or output_model.parent, ["report.json", "report.md"])
        else:
            copy_result(cfg, result, output_model.parent, [output_model.name, output_model.with_suffix(".json").name])
            reports = report_dir or output_model.parent
            copy_result(cfg, result, reports, ["report.json", "report.md", "report.png"])
    except (InputError, ValueError) as e:
        raise fail(e) from None
    m = result["metrics"]
    if "base_size" not in m:  # an IndexTTS-2.5 base (a .tiktoken vocabulary): kept and measured
        console.print(result["data"]["note"])
        return
    console.print(f"[bold]{m['base_size']} -> {m['vocab_size']} pieces[/] (+{m['chars_added']} characters, "
                  f"+{m['pieces_added']} pieces); base ids 0..{m['base_size'] - 1} unchanged", markup=True)
    console.print(f"model rows: number_text_tokens={m['vocab_size']} -> {m['model_rows']} rows in "
                  "text_embedding/text_head")
    console.print(f"base-language drift: {m['base_drift']:.2%}; added pieces used on held-out text: "
                  f"{m['heldout_piece_usage']:.1%}")
    for lang in sorted({k.split(".")[0] for k in m if k.endswith(".unk_char_rate_before")}):
        console.print(f"{lang}: unknown characters {m[lang + '.unk_char_rate_before']:.1%} -> "
                      f"{m[lang + '.unk_char_rate_after']:.1%}, tokens/char {m[lang + '.tokens_per_char_before']:.3f}"
                      f" -> {m[lang + '.tokens_per_char_after']:.3f}")
    if result["data"].get("note"):
        console.print(f"[yellow]note:[/] {escape(str(result['data']['note']))}", markup=True)
    print_outputs("Outputs", {"tokenizer": output_model, "sidecar": output_model.with_suffix(".json"),
                              "report": f"{reports / 'report.md'}  {reports / 'report.png'}"})


@config_flags("preprocess", "language")
def preprocess(
    manifest: Annotated[Path | None, typer.Option(
        help="Ingested manifest (dataset/manifest.jsonl; its split is kept) or a raw one (default: the "
        "config's dataset).")] = None,
    output_dir: Annotated[Path, typer.Option(
        help="Where the index goes (train/val manifests, text ids, rejects, report).")] = Path("processed_data"),
    tokenizer: Annotated[Path | None, typer.Option(
        help="The (extended) tokenizer (default: the extend-bpe stage's).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="Base checkpoint folder (default: the config's download.checkpoint).")] = None,
    w2v_bert: Annotated[Path | None, typer.Option(
        help="Wav2Vec2-BERT folder (default: <checkpoint>/hf_cache/w2v-bert-2.0).")] = None,
    codec: Annotated[Path | None, typer.Option(
        help="Semantic codec safetensors (default: <checkpoint>/hf_cache/...).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Text ids, semantic codes, speaker latents and emotion vectors for every clip.

    The same stage as the flow's: features live in the artifact store, keyed by audio and models,
    so only clips never seen with these models are processed; an interrupted run resumes at the
    first unfinished unit.  Batches are sorted by length, sized by a GPU memory probe, halved on
    out-of-memory; every clip ends up in the index or in rejects.jsonl.
    """
    from flows.local_inputs import store_for, tokenizer_artifact, use_checkpoint, use_manifests

    try:
        cfg = load_run_config(config, overrides, flags)
        store = store_for(cfg)
        if checkpoint is not None or w2v_bert is not None or codec is not None:
            base = checkpoint or (cfg.download.checkpoint.source if cfg.download.checkpoint else "tiny://0")
            use_checkpoint(cfg, base, w2v_bert, codec)
        given = use_manifests(cfg, [manifest], store, language=(flags or {}).get("language")) if manifest else {}
        if tokenizer is not None:
            cfg.extend_bpe.output_name = tokenizer.name
            given["extend-bpe"] = tokenizer_artifact(store, tokenizer)
        result = run_stage(cfg, "preprocess", given)
        copy_result(cfg, result, output_dir)
    except (InputError, ValueError) as e:
        raise fail(e) from None
    m = result["metrics"]
    rejected = {k.removeprefix("rejected."): v for k, v in m.items() if k.startswith("rejected.")}
    console.print(f"clips: {m['clips']}; indexed: {m['indexed']} (train {m['train']}, val {m['val']}); "
                  f"rejected: {m['rejected']}" + (f" ({', '.join(f'{k}: {v}' for k, v in rejected.items())})"
                                                   if m["rejected"] else ""))
    console.print(f"audio processed now: {m.get('audio_processed_now', 0)}; features reused: "
                  f"{m.get('features_reused', 0)}")
    print_outputs("Outputs", {k: output_dir / v for k, v in result["outputs"].items()})


def import_(
    files: Annotated[list[Path], typer.Argument(
        help="The community trainer's processed_data/*_manifest.jsonl and/or GPT_pairs_*.jsonl files.")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", "-m", help="The raw manifest those were made from (audio, text, speaker, language by id; "
        "default: what the community rows carry).")] = None,
    checkpoint: Annotated[str | None, typer.Option(
        help="The base checkpoint folder the run uses (default: the config's download.checkpoint).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where manifest.jsonl and import-report.json go.")]
    = Path("imported"),
    spot_checks: Annotated[int, typer.Option(help="Clips recomputed and compared before anything is reused.")] = 8,
    field: Annotated[list[str] | None, typer.Option(
        "--field", metavar="OURS=THEIRS", help="The raw manifest's own name for a field (repeatable).")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Bring a community trainer's processed features (JarodMica/AM layout) into the pipeline.

    A seeded sample of clips is recomputed with the base checkpoint and compared (codes exactly,
    conditioning and emotion vectors by cosine); only if they match are the features stored where
    preprocess finds them, so it computes only what is missing.  Otherwise nothing is reused and
    preprocess recomputes everything (the report says why: another base model, the padded-codes
    bug of batch sizes above 1, ...).  Then: indextts-train run --set ingest.manifests=... or
    ingest --manifest <output-dir>/manifest.jsonl, preprocess, build-pairs, train.
    """
    from flows.importing import import_community
    from flows.local_inputs import use_checkpoint

    try:
        cfg = load_run_config(config, overrides)
        pairs_ = [f.partition("=") for f in field or []]
        bad = [f for f, (ours, eq, theirs) in zip(field or [], pairs_) if not (eq and ours and theirs)]
        if bad:
            raise InputError(f"--field {bad[0]!r}: expected OURS=THEIRS, e.g. audio=audio_path")
        if checkpoint is not None:
            use_checkpoint(cfg, checkpoint)
        assets = run_stage(cfg, "download")["assets"]
        out = import_community(cfg, assets, files, manifest, output_dir, spot_checks=spot_checks,
                               fields={ours: theirs for ours, _, theirs in pairs_})
    except (InputError, ValueError) as e:
        raise fail(e) from None
    r = out.report
    check = r.spot_check
    if check is not None:
        console.print(check.table(), highlight=False)
    console.print(f"clips: {r.read} read, {r.complete} complete, {r.incomplete} incomplete, {r.no_audio} without "
                  f"audio; imported: {r.imported}; left to preprocess: {r.recompute}; rejected rows: {r.rejected}",
                  highlight=False)
    if r.reason:
        console.print(f"[bold]{escape(str(r.reason))}[/]", markup=True)
    if out.without_text:
        err_console.print(f"{len(out.without_text)} clip(s) have no text (give --manifest with the raw rows): "
                          f"{', '.join(out.without_text[:5])}", highlight=False)
    print_outputs("Outputs", {"manifest (for ingest)": f"{out.manifest} ({out.rows} rows)",
                              "report": out.report_path, "feature set": out.featureset})


@config_flags("pairs", "run.seed")
def pairs(
    manifest: Annotated[Path | None, typer.Option(
        help="An index manifest (processed_data/train_manifest.jsonl; default: the preprocess stage's).")] = None,
    output: Annotated[Path | None, typer.Option(
        help="Pair file to write (processed_data/GPT_pairs_train.jsonl); the other split's pairs, the index and "
        "the reports go next to it.")] = None,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    flags: dict | None = None,
) -> None:
    """Prompt/target pairs for train and validation: each target is prompted by other clips of its speaker.

    GPT training needs them: a model trained on clips prompted by themselves learns to copy the
    prompt.  Both pair files are written in one go (GPT_pairs_train.jsonl, GPT_pairs_val.jsonl).
    """
    from flows.local_inputs import index_artifact, store_for

    try:
        cfg = load_run_config(config, overrides, flags)
        given = {"preprocess": index_artifact(store_for(cfg), manifest)} if manifest else {}
        result = run_stage(cfg, "pairs", given)
        dest = output.parent if output else (manifest.parent if manifest else Path("processed_data"))
        copy_result(cfg, result, dest)
        split = "val" if manifest is not None and manifest.name.startswith("val") else "train"
        written = dest / f"GPT_pairs_{split}.jsonl"
        if output is not None and output.resolve() != written.resolve():
            shutil.copyfile(written, output)
            written = output
    except (InputError, ValueError, FileNotFoundError) as e:
        raise fail(e) from None
    m = result["metrics"]
    console.print(f"pairs: {m[f'{split}_pairs']} ({split}); train pairs: {m['train_pairs']}, val pairs: "
                  f"{m['val_pairs']}; speakers: {m['train_speakers']}; skipped single-clip speakers: "
                  f"{m['skipped_speakers']}")
    for warning in result["data"].get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(str(warning))}", markup=True)
    print_outputs("Outputs", {"pairs": written, "train pairs": dest / "GPT_pairs_train.jsonl",
                              "val pairs": dest / "GPT_pairs_val.jsonl"})

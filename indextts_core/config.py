"""Run configuration: one pydantic model per stage, composed into :class:`PipelineConfig`.

A whole run is described by one YAML file whose top-level keys are the sections below; every
field has a default that works on a laptop (the bundled demo dataset, local folders).  Values
can be overridden with dotted ``key=value`` strings (``train.epochs=3``), which is what the CLI's
``--set`` flag and its named flags do.  Relative paths are relative to the directory the command
runs from.

Each section is also the options object of its stage's code (no copies): core functions take
the section, and the command-line flags of its stage's command are made from its fields
(``flows/flags.py``); a seed-guide flag name that differs from the field's is declared on the field
(``json_schema_extra={"flags": [...]}``).  The module is longer than the others on purpose: every option of a run, with its
default and description, is readable in this one file (it is also the UI form of a deployment).

Errors name the field and where the bad value came from::

    ConfigError: run.yaml: ingest.min_duration_s: Input should be a valid number (got 'short')
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from indextts_core.errors import ConfigError

log = logging.getLogger(__name__)

#: The bundled demo, shipped inside the package (so an installed copy has it too).
DEMO_DIR = Path(__file__).resolve().parent / "demo"
#: The demo dataset (``indextts_core/demo/dataset``): 60 clips, ``manifest.jsonl`` and ``audio/``.
DEMO_DATASET_DIR = DEMO_DIR / "dataset"
#: The demo's run configuration: what every ``indextts-train`` command uses when no ``--config`` is given.
DEMO_CONFIG = DEMO_DIR / "demo.yaml"

_LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
#: What a hub revision may look like (git ref-name characters; no placeholders, spaces or URL syntax).
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")


class _Section(BaseModel):
    """One section of the run configuration; it is also the options object its stage's code takes.

    ``NOT_IN_KEY`` names the fields that do not change the stage's output (devices, threads,
    names of local folders): every other field is part of the stage's cache key, so a field added
    to a section is in the key unless it is listed here.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset()
    #: Fields added after runs were made, left out of the key while at their default (declared once,
    #: on the field), so an existing run keeps its key (its cache and its resumable training folder).
    KEY_OMITTED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def default_of(cls, name: str) -> Any:
        """A field's default as plain data (what ``model_dump(mode="json")`` gives for it)."""
        return cls().model_dump(mode="json")[name]

    def key_fields(self) -> dict[str, Any]:
        """The fields that determine the stage's output, as plain data."""
        values = self.model_dump(mode="json")
        omitted = {name: self.default_of(name) for name in self.KEY_OMITTED_AT_DEFAULT}
        return {name: value for name, value in values.items()
                if name not in self.NOT_IN_KEY and not (name in omitted and value == omitted[name])}


class RunConfig(_Section):
    """Where a run writes its local outputs and how it seeds randomness."""

    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({"name", "output_dir"})

    name: str = Field("demo", description="Run name; used for the MLflow run and the summary.")
    output_dir: Path = Field(Path("runs/demo"), description="Local folder for this run's outputs.")
    seed: int = Field(1234, description="Seed for every random choice (split, pairs, training).")


class StorageConfig(_Section):
    """The artifact store: a local folder (default) or ``s3://bucket/prefix``.

    S3 credentials may be given here or, better, through the usual AWS environment variables
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``)
    or an AWS profile.  Given here, they reach every S3 client of a run (the store, MLflow's
    artifacts, Prefect's result records).  A secret never needs to be written in a file or on a
    command line: ``storage.secret_access_key_file`` / ``storage.access_key_id_file`` name a file
    holding it (a mounted Kubernetes or Docker secret), read when the configuration loads, and
    ``storage.secret_access_key: env:VARNAME`` reads it from a variable.  Secrets are never printed
    or logged.
    """

    uri: str = Field(
        default_factory=lambda: os.environ.get("INDEXTTS_STORAGE_URI", "runs/store"),
        description="Local folder or s3://bucket/prefix (default: $INDEXTTS_STORAGE_URI, else runs/store).",
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, R2, ...).")
    region: str | None = None
    access_key_id: SecretStr | None = Field(None, description="S3 access key id (or env:VARNAME).")
    secret_access_key: SecretStr | None = Field(None, description="S3 secret key (or env:VARNAME; better: "
                                                "secret_access_key_file or $AWS_SECRET_ACCESS_KEY).")
    access_key_id_file: Path | None = Field(None, description="A file holding the access key id (read at load).")
    secret_access_key_file: Path | None = Field(None, description="A file holding the secret key (read at load); "
                                                "keeps the secret off command lines and config files.")
    multipart_threshold_mb: PositiveInt = Field(64, description="Files larger than this upload in parts.")
    multipart_chunk_mb: PositiveInt = Field(16, description="Part size for multipart uploads (S3 minimum: 5).")
    cache_dir: Path | None = Field(
        None, description="Local cache for objects read from S3 (default: ~/.cache/indextts-train)."
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files_and_env(cls, data: Any) -> Any:
        """``env:VARNAME`` values and ``*_file`` settings become the secret they point at (errors name both).

        A file is read once, when the configuration loads; the field is then cleared, so validating the loaded
        configuration again (an assignment, a copy) never needs the file."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name in ("access_key_id", "secret_access_key"):
            value = data.get(name)
            if isinstance(value, str) and value.startswith("env:"):
                var = value.removeprefix("env:")
                if not os.environ.get(var):
                    raise ValueError(f"{name}: {value!r} names the environment variable {var}, which is not set")
                data[name] = os.environ[var]
            path = data.get(f"{name}_file")
            if path in (None, ""):
                continue
            try:
                secret = Path(path).expanduser().read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"{name}_file: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
            if not secret:
                raise ValueError(f"{name}_file: {path} is empty")
            given = data.get(name)
            given = given.get_secret_value() if isinstance(given, SecretStr) else given
            if given not in (None, "", secret):
                raise ValueError(f"{name} and {name}_file ({path}) are both set, to different values: give one")
            data[name], data[f"{name}_file"] = secret, None  # read once: the config now holds the (masked) secret
        return data

    @field_validator("multipart_chunk_mb")
    @classmethod
    def _s3_minimum_part(cls, v: int) -> int:
        if v < 5:
            raise ValueError("S3 parts must be at least 5 MB")
        return v


class AssetSource(_Section):
    """Where one asset comes from: a local path, an ``s3://`` prefix or the Hugging Face hub.

    Hub sources are written ``hf://owner/name`` (models) or ``hf://datasets/owner/name`` and must
    pin a ``revision`` (a commit hash or tag).  ``files`` is an allow-list; when it is left out,
    each asset has a default (see :mod:`indextts_core.store.sources`).
    """

    source: str = Field(description="Local path, s3://bucket/prefix, hf://[datasets/]owner/name, tiny://<seed>[@2.5] "
                        "(a tiny random model in the official layout, for tests and the demo) or random://<seed> "
                        "(download.checkpoint only: the official folder at the released shapes, random weights).")
    revision: str | None = Field(None, description="Hub revision to pin (commit hash or tag).")
    files: list[str] | None = Field(
        None, description="Allow-list of files relative to the source; None = the asset's default list."
    )

    @field_validator("revision")
    @classmethod
    def _real_revision(cls, value: str | None) -> str | None:
        """A commit hash, a tag or a branch name: not a template placeholder, no spaces or URL syntax."""
        if value is None:
            return None
        if not _REVISION.fullmatch(value) or value.startswith(("-", ".", "/")) or ".." in value:
            raise ValueError(f"{value!r} is not a revision: give a commit hash (40 hex digits), a tag or a branch "
                             "name (a placeholder such as <commit> must be replaced)")
        return value

    @model_validator(mode="after")
    def _hub_needs_pins(self) -> AssetSource:
        if self.source.startswith("hf://"):
            if not self.revision:
                raise ValueError("a hf:// source must pin a revision (commit hash or tag)")
        return self


class DownloadConfig(_Section):
    """Model assets the pipeline needs, fetched into the artifact store by the download stage."""

    checkpoint: AssetSource | None = Field(
        default_factory=lambda: AssetSource(source="tiny://0"),
        description="IndexTTS-2 checkpoint folder (config.yaml, gpt.pth, bpe.model, wav2vec2bert_stats.pt, ...); "
        "default: tiny://0, a tiny random model written on the spot (the laptop demo); random://<seed>: the "
        "folder at the released shapes with random weights (about 8 GB, written once; rehearsing a real run's sizes).",
    )
    w2v_bert: AssetSource | None = Field(None, description="facebook/w2v-bert-2.0 folder (Hugging Face layout).")
    semantic_codec: AssetSource | None = Field(None, description="MaskGCT semantic codec safetensors "
                                               "(hf://amphion/MaskGCT: semantic_codec/model.safetensors).")
    campplus: AssetSource | None = Field(None, description="CAMPPlus speaker encoder for synthesis and evaluation "
                                         "(hf://funasr/campplus: campplus_cn_common.bin).")
    bigvgan: AssetSource | None = Field(None, description="BigVGAN vocoder folder for synthesis and evaluation "
                                        "(hf://nvidia/bigvgan_v2_22khz_80band_256x: config.json, "
                                        "bigvgan_generator.pt).")
    asr: AssetSource | None = Field(None, description="ASR folder (Hugging Face layout: Whisper, e.g. hf://openai/"
                                    "whisper-large-v3, or a CTC model, e.g. hf://facebook/mms-1b-all; see "
                                    "evaluate.asr_backend) for the evaluation's CER/WER; tiny://<seed>: a tiny random "
                                    "one (the demo; its transcripts are noise).")
    speaker_verifier: AssetSource | None = Field(
        None, description="An independent speaker verification model for the evaluation's speaker similarity "
        "(Hugging Face layout, e.g. hf://microsoft/wavlm-base-plus-sv, a WavLMForXVector); tiny://<seed>: a tiny "
        "random one (the demo; its scores are noise).  Without one, only the checkpoint's own CAMPPlus scores "
        "similarity.")
    hf_cache_dir: Path | None = Field(None, description="Hugging Face cache folder (default: the hub's own).")
    offline: bool = Field(False, description="Never contact the hub; use only what the cache holds.")


class ManifestSource(_Section):
    """One input manifest: a JSONL file, an LJSpeech folder, or a folder of audio + .txt files."""

    path: str = Field(description="Path (relative to the dataset source unless absolute) or s3:// URI.")
    format: Literal["auto", "jsonl", "ljspeech", "folder"] = "auto"
    language: str | None = Field(None, description="Language for rows that do not name one.")
    speaker: str | None = Field(None, description="Speaker for rows that do not name one.")
    fields: dict[str, str] = Field({}, description="The manifest's own field names: {our field: theirs}, e.g. "
                                   "{audio: audio_path, speaker: speaker_id} (common names are recognised anyway).")

    @field_validator("fields")
    @classmethod
    def _our_fields(cls, v: dict[str, str]) -> dict[str, str]:
        known = ("id", "audio", "text", "speaker", "language", "duration", "emotion")
        unknown = [k for k in v if k not in known]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not a manifest field (map onto one of {', '.join(known)})")
        return v

    @field_validator("language")
    @classmethod
    def _language_code(cls, v: str | None) -> str | None:
        if v is not None and not re.match(_LANGUAGE_PATTERN, v):
            raise ValueError(f"not a language code like 'am' or 'pt-BR': {v!r}")
        return v


class _DurationBounds(_Section):
    """A section whose ``min_duration_s`` must be below its ``max_duration_s`` (each declares both fields)."""

    @model_validator(mode="after")
    def _bounds(self) -> _DurationBounds:
        low, high = getattr(self, "min_duration_s"), getattr(self, "max_duration_s")
        if low >= high:
            raise ValueError(f"min_duration_s ({low}) must be below max_duration_s ({high})")
        return self


class CurateConfig(_DurationBounds):
    """Curate: long recordings -> segmented, transcribed, cleaned clips in a manifest ``ingest`` reads.

    Runs before ``ingest`` when ``sources`` is set.  Each recording is a unit of its own, named by its
    content (audio and sidecar files) and these options, so adding recordings processes only the new
    ones and a killed run resumes at the next recording; see ``indextts_core.curate``.  A recording's
    text comes from a sidecar of the same name: ``.srt``/``.vtt`` subtitles (cue times cut the clips),
    a ``.txt`` transcript (placed on voice-activity segments by CTC forced alignment) or none (the ASR
    judge transcribes, its language forced).
    """

    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({"sources", "workers", "device", "listen_examples"})

    sources: list[str] = Field(
        default_factory=list, description="Long recordings: local folders, files or s3:// prefixes (audio, or video "
        "whose audio track ffmpeg can read), each with optional .srt/.vtt/.txt/.json sidecars of the same name. "
        "Empty: no curate stage (ingest reads ingest.source).", json_schema_extra={"flags": ["--source"]})
    speaker_map: str | None = Field(None, description="A .json object or two-column .csv (recording file name or "
                                    "stem -> speaker); default: each recording is its own speaker.")
    speaker_field: str = Field("speaker", description="The field of a recording's sidecar .json naming its speaker "
                               "(used when the speaker map does not name the recording).")
    asr_model: str | None = Field(None, description="ASR folder that transcribes bare recordings, checks given text "
                                  "and aligns transcripts (a CTC model aligns); default: the download stage's asr.")
    min_duration_s: float = Field(1.0, gt=0, description="Shorter segments are merged with a neighbour or rejected.")
    max_duration_s: float = Field(15.0, gt=0, description="Longer segments are cut at their longest inner pause, "
                                  "else rejected.")
    min_pause_s: float = Field(0.3, gt=0, description="Silences at least this long are where clips may be cut.")
    head_s: float = Field(0.1, ge=0, description="Audio kept before a clip's first speech.")
    tail_s: float = Field(0.5, ge=0, description="Audio kept after a clip's last speech (a tight cut clips word "
                          "endings); never past the middle of the pause that follows.")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero VAD speech probability threshold.")
    sample_rate: PositiveInt = Field(22050, description="Sample rate of the written FLAC clips (resampled once).")
    loudness_lufs: float | None = Field(-23.0, le=0, description="Integrated loudness (ITU-R BS.1770) each clip is "
                                        "normalised to; null keeps the level.")
    max_cer: float = Field(0.3, ge=0, description="Reject a clip whose given text and ASR transcript differ by more "
                           "than this CER (checked only when the judge is reliable, see max_judge_cer).")
    max_judge_cer: float = Field(0.5, ge=0, description="The ASR judge's CER on the clips with given text above which "
                                 "it is unreliable: no CER gate, and bare recordings' clips are rejected.")
    min_dnsmos: float | None = Field(2.0, ge=1, le=5, description="Reject clips whose DNSMOS OVRL is below this "
                                     "(noise, reverberation); null: no DNSMOS.")
    max_clipped_share: float = Field(0.001, ge=0, le=1, description="Reject clips with a larger share of samples "
                                     "at full scale.")
    max_silence_share: float = Field(0.6, gt=0, le=1, description="Reject clips whose share of non-speech is higher.")
    dedupe: bool = Field(True, description="Reject exact duplicates (same decoded audio) and near duplicates (same "
                         "normalised text, durations within near_duplicate_s).")
    near_duplicate_s: float = Field(0.15, ge=0, description="Duration tolerance of a near duplicate.")
    check_script: bool = Field(True, description="Reject text not written in the language's script.")
    listen_examples: int = Field(5, ge=0, description="Clips per rejection reason on the report's listening page.")
    workers: int = Field(0, ge=0, description="Recordings processed at once; 0 = one per CPU core (max 4).")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class IngestConfig(_DurationBounds):
    """Ingest: which manifests make the dataset, how rows are validated and split."""

    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({"source", "workers"})

    source: AssetSource = Field(
        default_factory=lambda: AssetSource(source=str(DEMO_DATASET_DIR)),
        description="Dataset root fetched by the download stage (default: the bundled demo).",
    )
    manifests: list[ManifestSource] = Field(
        default_factory=lambda: [ManifestSource(path="manifest.jsonl", format="jsonl")],
        min_length=1,
    )
    min_duration_s: float = Field(0.5, ge=0, description="Shorter clips are rejected.",
                                  json_schema_extra={"flags": ["--min-duration"]})
    max_duration_s: float = Field(30.0, gt=0, description="Longer clips are rejected (model limit: ~36 s).",
                                  json_schema_extra={"flags": ["--max-duration"]})
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of each speaker's clips held out.")
    val_min_speaker_clips: int = Field(
        3, ge=2, description="Speakers (per language) with fewer clips stay entirely in train."
    )
    val_speakers: list[str] = Field(
        default_factory=list, description="Speakers held out entirely (all their clips in validation), so "
        "validation also measures voices never trained on; reported separately as unseen_speakers.",
        json_schema_extra={"flags": ["--val-speaker"]})
    max_rejected_fraction: float = Field(
        0.5, ge=0, le=1, description="Fail the stage when more than this share of rows is rejected."
    )
    workers: int = Field(0, ge=0, description="Audio decoding threads; 0 = one per CPU core.")


class CorpusConfig(_Section):
    """Corpus: the text the tokenizer stage learns the new language from."""

    include_val: bool = Field(True, description="Also take text from the validation split.")


class ExtendBpeConfig(_Section):
    """Tokenizer extension: append the new language's pieces to the base SentencePiece model.

    Ids 0..N-1 of the base stay byte-identical; see ``indextts_core.text.extend_bpe``.  On an
    IndexTTS-2.5 base (byte-level tiktoken vocabulary) nothing is appended: the stage reports
    coverage and records the language choice (``lang_code``, ``lang_row_init``); see
    ``indextts_core.text.tiktoken_stage``.
    """

    KEY_OMITTED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"lang_code", "lang_row_init"})

    base_model: str | None = Field(None, description="Base tokenizer; default: the checkpoint's (bpe.model).")
    target_size: PositiveInt = Field(24000, description="Total vocabulary after extension (not the number added).")
    languages: list[str] | None = Field(None, description="Languages to mine; default: [language].",
                                        json_schema_extra={"flags": ["--language"]})
    max_base_drift: float = Field(0.0, ge=0, le=1, description="Allowed share of base probe sentences whose "
                                  "segmentation changes.")
    min_char_count: PositiveInt = Field(1, description="Characters seen this often get a piece (no <unk>).")
    min_piece_count: PositiveInt = Field(2, description="A longer piece must be used this often in the corpus.")
    heldout_fraction: float = Field(0.1, ge=0, lt=0.5, description="Lines held out for the report.")
    probe_text: str | None = Field(None, description="Base-language probe text (one sentence per line); default: "
                                   "the bundled English/Chinese probe.")
    output_name: str = Field("extended_bpe.model", description="File name of the extended tokenizer.")
    lang_code: str | None = Field(None, description="IndexTTS-2.5 base: the code passed to inference as `lang` (its "
                                  "<|code|> prefix and lang_embedding row); default: the run's language. A related "
                                  "released language (zh, en, ja, es, ar; e.g. ar for Amharic) keeps its trained row.")
    lang_row_init: Literal["keep", "released_mean"] | None = Field(
        None, description="IndexTTS-2.5 base: how the chosen lang_embedding row starts; default: keep for a released "
        "language, released_mean (the mean of the released languages' rows; untrained rows are N(0, 1)) otherwise.")


class PreprocessConfig(_Section):
    """Feature extraction: text ids, semantic codes, speaker latents, emotion vectors."""

    #: how and where the work runs, not what it produces
    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({
        "batch_size", "max_batch_seconds", "workers", "device", "runner", "parallel_units", "dask_address",
        "dask_workers"})

    batch_size: int | Literal["auto"] = Field("auto", description="Most clips per batch; 'auto' = no cap.")
    max_batch_seconds: float | Literal["auto"] = Field(
        "auto", description="Padded audio seconds per batch; 'auto' probes GPU memory on the longest clips "
        "(CPU: 60).")
    workers: int | Literal["auto"] = Field("auto", description="Audio decoding threads; 'auto' = CPU count.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    unit_clips: PositiveInt = Field(256, description="Clips per work unit (one shard file, one resume point).")
    max_unk_share: float = Field(0.05, ge=0, le=1, description="Reject clips whose text is more <unk> than this.")
    silence_dbfs: float = Field(-50.0, description="Reject clips quieter than this overall level.")
    max_clipped_share: float = Field(0.001, ge=0, le=1, description="Reject clips with more full-scale samples.")
    cond_max_seconds: float = Field(15.0, gt=0, description="Speaker/emotion conditioning uses at most this much "
                                    "audio (inference crops prompts to 15 s).")
    runner: Literal["local", "dask"] = Field("local", description="Where work units run: this process's threads, "
                                             "or a Dask cluster (prefect-dask).")
    parallel_units: PositiveInt = Field(1, description="Work units processed at once by the local runner.")
    dask_address: str | None = Field(None, description="Dask scheduler (tcp://host:8786); None = a local cluster.")
    dask_workers: PositiveInt = Field(2, description="Workers of the local Dask cluster.")


class PairsConfig(_Section):
    """Prompt/target pairs: each target gets prompts from other clips of its speaker."""

    pairs_per_target: PositiveInt = 2
    emotion_source: Literal["prompt", "target", "mix"] = "prompt"
    allow_self_prompt: bool = Field(False, description="Let single-clip speakers prompt themselves.")


class TrainConfig(_Section):
    """GPT fine-tuning (``indextts-train train`` and the flow's train stage).

    Batches are built to a token budget: ``batch_tokens`` padded tokens per optimizer step (all
    GPUs together), cut into micro-batches that fit in memory (``micro_batch_tokens``; 'auto'
    probes GPU memory on the longest sample) with gradient accumulation making up the rest.
    """

    #: settings that do not change the trained weights (where, how fast, under which names)
    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({
        "resume", "warm_start", "workers", "device", "nproc_per_node", "output_name", "checkpoint_dir",
        "registered_model", "val_audio_samples", "val_audio_every", "val_audio_diffusion_steps", "forgetting_alarm",
        "optimizer_state"})
    KEY_OMITTED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"lora_rank", "lora_alpha", "lora_dropout",
                                                                   "lora_targets", "replay_languages", "replay_share"})

    epochs: PositiveInt = 2
    batch_tokens: PositiveInt = Field(12288, description="Effective batch: padded tokens per optimizer step, all "
                                      "ranks together (a token is a conditioning, text or code position).")
    micro_batch_tokens: PositiveInt | Literal["auto"] = Field(
        "auto", description="Padded tokens per forward pass on one device; 'auto' = a GPU memory probe on the longest "
        "sample (CPU: batch_tokens / ranks).")
    memory_margin: float = Field(0.85, gt=0, le=1, description="Share of GPU memory the probe plans to use.")
    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate of the backbone (and unfrozen base rows).")
    new_rows_learning_rate: float = Field(1e-4, gt=0, description="Peak learning rate of the text rows the "
                                          "tokenizer added.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay of the backbone's matrices.")
    new_rows_weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the new text rows.")
    warmup_steps: int = Field(1000, ge=0, description="Linear warm-up steps, then a cosine decay (a warm-up as "
                              "long as the run or longer is clipped to a tenth of its steps, and logged).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine ends at this share of the peak.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 = off).")
    text_loss_weight: float = Field(0.2, ge=0)
    mel_loss_weight: float = Field(0.8, ge=0)
    val_interval: PositiveInt = Field(1000, description="Validate (and save a checkpoint) every this many optimiser "
                                      "steps, and at every epoch end.")
    val_generate: int = Field(8, ge=0, description="Validation pairs decoded at every validation (and at step 0) "
                              "to measure stop rate, length ratio and repetition; 0 = off.")
    val_generate_decoding: Literal["infer_v2", "greedy"] = Field(
        "infer_v2", description="How those pairs are decoded: infer_v2's defaults (what users hear) or greedy "
        "(cheapest).")
    val_generate_max_ratio: float = Field(3.0, gt=0, description="Each decoded item stops at this many times its "
                                          "reference's codes (+10): bounds the cost of a model that never stops.")
    val_audio_samples: int = Field(2, ge=0, description="Validation items per language spoken as audio (full "
                                   "synthesis) at step 0 and every val_audio_every-th validation, into TensorBoard, "
                                   "MLflow and <output>/samples/; needs the base folder's synthesis models (0 = off).")
    val_audio_every: PositiveInt = Field(1, description="Speak the audio samples at every N-th validation (and the "
                                         "last).")
    val_audio_diffusion_steps: PositiveInt = Field(25, description="Flow-matching steps of the audio samples "
                                                   "(infer_v2: 25).")
    keep_checkpoints: PositiveInt = Field(3, description="How many model_step{N}.pth to keep (best.pth is kept "
                                          "apart).")
    optimizer_state: Literal["every", "latest"] = Field(
        "every", description="Which checkpoints hold AdamW's moments (two values per trainable weight: 3.7 of the "
        "6.9 GiB of a full fine-tune's checkpoint of the released GPT). every: all of them, so a run resumes exactly "
        "from any kept file; latest: only latest.pth (written apart), while model_step{N}.pth and best.pth hold the "
        "weights, schedule, progress and random states at about half the size. Resuming from one of those continues "
        "at its step with fresh AdamW moments (a warning and the metric train/fresh_optimizer_moments say so).")
    best_metric: str = Field("loss", description="Validation metric that picks best.pth: loss, mel_loss, or per "
                             "language, e.g. am/loss.")
    resume: str | None = Field(None, description="'auto' (latest.pth in the output folder, if any) or a checkpoint "
                               "path.")
    warm_start: bool = Field(False, description="With resume=<path>: start a new run from its weights (a community "
                             "trainer's latest.pth / model_stepN.pth also gives its step count and, where shapes "
                             "match, its optimizer state).")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="auto: bf16 on GPUs that have it, "
                                                         "else fp16 with a gradient scaler; fp32 on CPU.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass (less "
                                         "memory, about a third more compute).")
    freeze_base_rows: bool = Field(True, description="Keep the base tokenizer's text rows byte-identical.")
    replay_languages: list[str] = Field(["zh", "en"], description="Languages the base model already speaks whose "
                                        "clips in the training data are replay (base-language data that keeps what "
                                        "the base could do; add them as ingest manifests, they go through the same "
                                        "stages).")
    replay_share: float | None = Field(None, ge=0, lt=1, description="Share of each epoch's tokens drawn from the "
                                       "replay languages' clips (e.g. 0.1-0.2; resampled deterministically per epoch, "
                                       "resumable); none = the data's natural mix.")
    forgetting_alarm: float | None = Field(0.1, gt=0, description="Raise the forgetting alarm (log, the validation "
                                           "table, MLflow tag and metric) when a replay language's validation loss "
                                           "rises more than this (relative) above its step-0 baseline; none = off.")
    freeze_conditioning: bool = Field(True, description="Also freeze the two speed rows of the prefix (the "
                                      "conditioning encoders are always frozen: their outputs are precomputed).")
    dropout: float = Field(0.1, ge=0, lt=1, description="GPT dropout (the released model trains with 0.1).")
    lora_rank: int = Field(0, ge=0, description="LoRA adapters of this rank on the GPT stack (0 = full fine-tuning). "
                           "With adapters the stack, heads and mel embeddings train only through them; new text rows "
                           "and a 2.5 language row still train. Merged into the weights on export (official keys).")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scale numerator: the update is (alpha / rank) * B @ A.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    lora_targets: list[str] = Field(["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
                                    description="Layers of the GPT stack that get adapters (dotted name endings).")
    pad_at_end: bool = Field(True, description="Pack each sample as [prompt | text | codes] with its padding after "
                             "it, so no position sees padding (as at inference) and a sample's loss does not depend "
                             "on its batch; false = the released per-segment padding.")
    fresh_prompts: bool = Field(False, description="Draw new same-speaker prompts every epoch instead of the pair "
                                "file's.")
    workers: int | Literal["auto"] = Field("auto", description="Batch-loading threads; 'auto' from the CPU count.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc_per_node: PositiveInt | Literal["auto"] = Field(
        "auto", description="Data-parallel processes the flow's train stage starts on its machine (torchrun); "
        "'auto' = one per visible GPU (one on CPU).  The CLI takes this from torchrun instead.")
    deterministic: bool = Field(False, description="Deterministic GPU kernels, so a resumed run's weights are "
                                "bitwise those of an uninterrupted one on GPUs too (CPU: always, for a fixed thread "
                                "count); slower.")
    max_steps: PositiveInt | None = Field(None, description="Stop after this many optimizer steps (smoke runs).")
    export: bool = Field(True, description="Export the best checkpoint in the official layout at the end.")
    export_dtype: Literal["float32", "float16"] = "float32"
    output_name: str = Field("trained_ckpts", description="Folder of checkpoints and logs under run.output_dir; "
                             "each set of inputs and settings trains in its own <key>/ sub-folder.")
    checkpoint_dir: Path | None = Field(None, description="Train in exactly this folder instead of "
                                        "run.output_dir/output_name/<key>.",
                                        json_schema_extra={"flags": ["--output-dir"]})
    registered_model: str | None = Field(None, description="MLflow registered-model name for the export "
                                         "(default: indextts2-<language>); the flow registers every finished run.")

    @model_validator(mode="after")
    def _some_loss(self) -> TrainConfig:
        if self.text_loss_weight == 0 and self.mel_loss_weight == 0:
            raise ValueError("text_loss_weight and mel_loss_weight cannot both be 0")
        return self


class GenerationConfig(_Section):
    """Decoding the GPT: infer_v2's options, with its defaults (``indextts-train generate``).

    Defaults are what the official ``IndexTTS2.infer`` uses: sampling with 3 beams (beam
    sampling), temperature 0.8, top-k 30, top-p 0.8, repetition penalty 10, length penalty 0, at
    most 1500 codes.  ``do_sample: false`` gives beam search, ``num_beams: 1`` greedy or plain
    sampling.
    """

    KEY_OMITTED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"max_text_tokens_per_segment", "max_segment_s"})

    do_sample: bool = Field(True, description="Sample (with beams: beam sampling); false = argmax / beam search.")
    temperature: float = Field(0.8, gt=0, description="Divides the logits before sampling (sampling only).")
    top_k: int = Field(30, ge=0, description="Keep the k most likely codes when sampling (0 = off).")
    top_p: float = Field(0.8, gt=0, le=1, description="Keep the smallest set of codes with this much probability "
                         "when sampling (1 = off).")
    num_beams: PositiveInt = Field(3, description="Beams (1 = no beam search).")
    repetition_penalty: float = Field(10.0, gt=0, description="Divides (multiplies, if negative) the score of "
                                      "every code already in the sequence, as transformers does (1 = off).")
    length_penalty: float = Field(0.0, description="Beam scores are divided by length ** this (0 = plain sums).")
    max_mel_tokens: PositiveInt = Field(1500, description="Most codes generated per item (infer_v2's "
                                        "max_mel_tokens); an item that reaches it did not stop.")
    emo_alpha: float = Field(1.0, ge=0, le=1, description="How much of the emotion prompt's emotion vector to mix "
                             "into the speaker's (infer_v2's emo_alpha).")
    batch_exact: bool = Field(True, description="Each item of a batch gets exactly what it gets alone (exact "
                              "conditioning, one random stream per item); false = the official batching, padding "
                              "leak and one shared random stream included.")
    seed: int = Field(0, description="Seed of the sampling (item i of a batch uses seed + i).")
    max_text_tokens_per_segment: PositiveInt | None = Field(
        None, description="Most text tokens per spoken segment (a long line is cut into segments); default: the "
        "model's measured text tokens per second of speech for the language (indextts-export.json: segments) times "
        "max_segment_s, else infer_v2's 120 (tuned for Chinese, about 28 s of speech).")
    max_segment_s: float = Field(20.0, gt=0, description="Seconds of speech a segment may hold when the segment "
                                 "budget comes from the model's measured tokens per second (alignment holds to "
                                 "about 25-30 s).")


class EvaluateConfig(_Section):
    """The evaluation stage: does the model speak the language? (``indextts-train evaluate``)

    Every model (the base, the fine-tuned one, the current champion) says the same fixed set with
    the same seeds: held-out clips of trained speakers and of unseen speakers, prompted with another
    clip of the same speaker, and the optional sentence file.  Scores: CER/WER through the ASR model
    (Whisper or a CTC model such as MMS, language forced), CAMPPlus speaker similarity to the
    prompt, duration ratio, stop failures; means with bootstrap intervals per language in an HTML
    report with audio players.  The judge is judged first: its CER on the real recordings decides, per
    language, whether its CER/WER are trusted (``max_judge_cer``); every model's CER is also reported as
    its excess over the recordings' CER.
    """

    NOT_IN_KEY: ClassVar[frozenset[str]] = frozenset({"device", "asr_batch_size"})
    KEY_OMITTED_AT_DEFAULT: ClassVar[frozenset[str]] = frozenset({"asr_backend", "asr_secondary",
                                                                   "speaker_verifier", "emotion_prompt",
                                                                   "emotion_items"})

    enabled: bool = Field(True, description="Run the evaluation stage after training.")
    max_items: PositiveInt = Field(16, description="Most items per language and group (seen / unseen speakers), "
                                   "drawn round-robin across speakers (stratified, not the first N); the chosen ids "
                                   "are recorded in evaluation.json.")
    sentences: Path | None = Field(None, description="Extra sentences to say (UTF-8, one per line, "
                                   "'<language><TAB><text>' or just text in the run's language).")
    asr_model: Path | None = Field(None, description="Local ASR folder (Hugging Face layout: Whisper, or a CTC "
                                   "model such as wav2vec2/MMS) for CER/WER; default: the download.asr asset; none: "
                                   "no CER/WER.")
    asr_backend: Literal["auto", "whisper", "ctc"] = Field(
        "auto", description="Which judge reads the ASR folder: auto reads its config.json (model_type whisper -> "
        "Whisper; an architectures entry ending in ForCTC -> CTC, e.g. wav2vec2 or MMS with per-language "
        "adapters; anything else is an error naming the file); whisper or ctc must match the folder.")
    asr_batch_size: PositiveInt = Field(8, description="Clips transcribed at once.")
    asr_secondary: Path | None = Field(None, description="A second opinion: a local ASR folder (any backend, chosen "
                                       "from its config.json) that re-transcribes the items above 50% CER under the "
                                       "first judge; the report shows both judges' CER on them.")
    max_judge_cer: float = Field(0.25, ge=0, description="The judge is judged first: a language whose real held-out "
                                 "recordings the ASR model reads with a higher CER than this gets its CER/WER marked "
                                 "'judge unreliable' (report, console, MLflow), and promotion does not decide on them "
                                 "(it falls back to validation loss and says why).")
    speaker_model: Path | None = Field(None, description="CAMPPlus weights for speaker similarity (release "
                                       "widths); default: the checkpoint's campplus_cn_common.bin (the model's own "
                                       "speaker encoder: its scores flatter the model, see speaker_verifier).")
    speaker_verifier: Path | None = Field(None, description="An independent speaker verification model (local "
                                          "Hugging Face folder: WavLMForXVector) scoring similarity next to the "
                                          "model's own CAMPPlus; default: the download.speaker_verifier asset; none: "
                                          "CAMPPlus only.")
    naturalness: bool = Field(True, description="DNSMOS (P.835 SIG/BAK/OVRL and P.808) per item for every model and "
                              "the real recordings (the speechmos package's ONNX models, offline; trained on English "
                              "speech).")
    emotion_prompt: Path | None = Field(None, description="The emotion probe's emotional prompt (audio, e.g. an angry "
                                        "or excited clip): a few held-out sentences are said with the speaker prompt "
                                        "alone and with this as the emotion prompt, by the base and the candidate; "
                                        "how far the output moves toward it is the emotion transfer; none = no probe "
                                        "(the demo names its bundled clip).")
    emotion_items: int = Field(2, ge=0, description="Sentences per language the emotion probe says (0 = no probe).")
    paragraph_sentences: int = Field(4, ge=0, description="The long-text probe: this many held-out sentences of a "
                                     "language joined into one paragraph, spoken by every model; the report gives the "
                                     "CER of its last sentence (is the end spoken?); 0 = no probe.")
    compare_base: bool = Field(True, description="Also evaluate the base checkpoint (its own tokenizer).")
    diffusion_steps: PositiveInt = Field(25, description="Flow-matching steps (infer_v2: 25).")
    cfg_rate: float = Field(0.7, ge=0, description="Classifier-free guidance of the decoder (infer_v2: 0.7).")
    max_duration_ratio: float = Field(3.0, gt=0, description="An item stops at this many times its reference's "
                                      "codes (counted as a stop failure).")
    resamples: PositiveInt = Field(1000, description="Bootstrap resamples of the confidence intervals.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    device: Literal["auto", "cpu", "cuda"] = "auto"


class PromotionConfig(_Section):
    """Which registered version is the ``champion``: it moves only on measured improvement."""

    metric: Literal["auto", "cer", "wer", "speaker_sim", "val_loss"] = Field(
        "auto", description="What decides: auto = cer when an ASR model is configured, else val_loss.")
    min_improvement: float = Field(0.0, ge=0, description="The candidate must beat the incumbent by more than this "
                                   "(absolute, in the metric's units).")
    require_significant: bool = Field(False, description="Also require the paired bootstrap interval of the "
                                      "difference to exclude zero.")
    max_base_regression: float | None = Field(
        0.05, ge=0, description="The base-language gate: a candidate whose CER on a language the base model already "
        "speaks (train.replay_languages, evaluated) is more than this above the base model's, or whose speaker "
        "similarity there is more than this below it, is not promoted, whatever it gained on the new language; "
        "none = no gate.")
    max_emotion_loss: float | None = Field(
        None, ge=0, le=1, description="Refuse a candidate that lost more than this share of the base model's emotion "
        "transfer (the evaluation's emotion probe); none = reported, not gated.")
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"


class OrchestrationConfig(_Section):
    """How the orchestrated flow runs stages: retries of transient faults and caching."""

    retries: int = Field(2, ge=0, description="Retries of a stage after a transient fault (network, S3, GPU OOM).")
    retry_delay_s: list[float] = Field([10.0, 60.0], description="Delay before each retry (the last repeats).")
    refresh_cache: bool = Field(False, description="Recompute every stage even when a cached result exists.")
    cached_answers: bool = Field(True, description="A stage command whose result an earlier command or run "
                                 "already stored answers from it without starting Prefect or MLflow (no flow run is "
                                 "recorded); off: every command runs its flow.")


class TrackingConfig(_Section):
    """MLflow tracking."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else a sqlite mlflow.db next to "
        "run.output_dir (runs/mlflow.db).",
    )
    experiment: str = "indextts2-finetune"
    system_metrics_s: float | None = Field(10.0, gt=0, description="Log MLflow system metrics (CPU, memory, disk, "
                                           "network; GPU on a GPU machine) on the train and "
                                           "evaluate runs every this many seconds; null: off.")
    close_stale_runs_after_h: float | None = Field(
        None, gt=0, description="Runs of this experiment another host left RUNNING are closed (KILLED) by the next "
        "run after this many hours; null: never (a run of this host is closed as soon as its process is gone).")


class PipelineConfig(_Section):
    """Everything one run needs, one section per stage."""

    extra_languages: list[str] = Field([], description="Language codes outside ISO 639 to accept as they are "
                                       "(no normaliser applies to them); every other code must be ISO 639-1/639-3.")
    language: str = Field("am", pattern=_LANGUAGE_PATTERN, description="The language being taught (ISO 639-1 or "
                          "639-3; 'amh' is read as 'am').")
    run: RunConfig = Field(default_factory=RunConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    download: DownloadConfig = Field(default_factory=DownloadConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    extend_bpe: ExtendBpeConfig = Field(default_factory=ExtendBpeConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str, info: ValidationInfo) -> str:
        from indextts_core.languages import canonical_language

        return canonical_language(value, info.data.get("extra_languages") or ())

    @model_validator(mode="after")
    def _known_languages_everywhere(self) -> PipelineConfig:
        """The manifests' and the tokenizer's language codes, checked and written as ``language`` is."""
        from indextts_core.languages import UnknownLanguage, canonical_language

        for i, m in enumerate(self.ingest.manifests):
            if m.language is not None:
                try:
                    canon = canonical_language(m.language, self.extra_languages)
                except UnknownLanguage as e:
                    raise ValueError(f"ingest.manifests.{i}.language: {e}") from None
                if canon != m.language:
                    m.language = canon
        if self.extend_bpe.languages:
            try:
                canon_list = [canonical_language(x, self.extra_languages) for x in self.extend_bpe.languages]
            except UnknownLanguage as e:
                raise ValueError(f"extend_bpe.languages: {e}") from None
            if canon_list != self.extend_bpe.languages:
                self.extend_bpe.languages = canon_list
        return self


# --------------------------------------------------------------------------- loading


#: Settings that hold a secret -> the environment variable that can give it instead.
SECRET_KEYS = {"storage.secret_access_key": "AWS_SECRET_ACCESS_KEY"}


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "language=ja"]`` into ``{"train.epochs": 3, "language": "ja"}``.

    Values are parsed as YAML scalars/flow collections, so ``3`` is an int, ``null`` is None and
    ``[a, b]`` is a list; anything else stays a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example train.epochs=3")
        if key in SECRET_KEYS and raw.strip() and not raw.strip().startswith("env:"):
            log.warning("--set %s=...: the secret is visible to every user of this machine (ps, /proc/<pid>/cmdline) "
                        "and in the shell history; pass %s_file=PATH (a file holding it), %s=env:VARNAME, or set "
                        "%s instead", key, key, key, SECRET_KEYS[key])
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out[key] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid field names at ``loc`` (for 'did you mean' hints)."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(current.model_fields)


def _format_errors(err: ValidationError, source_of: Mapping[str, str], default_source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc)
        source = next(
            (src for key, src in source_of.items() if dotted == key or dotted.startswith(key + ".")),
            default_source,
        )
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]), _field_names(PipelineConfig, loc), n=1)
            if close:
                msg += f" (did you mean '{close[0]}'?)"
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {dotted}: {msg}")
    return "\n".join(lines)


#: Sections renamed since earlier releases: old name -> current name (old files keep working).
RENAMED_SECTIONS = {"dataset": "ingest"}


def _renamed_key(key: str) -> str:
    head, dot, rest = key.partition(".")
    return RENAMED_SECTIONS.get(head, head) + dot + rest


def _renamed_sections(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for old, new in RENAMED_SECTIONS.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Build the run configuration from defaults, an optional YAML file and dotted overrides.

    Raises :class:`ConfigError` naming the file (or the override) and the field for any problem;
    ``labels`` names where an override came from (``{"train.amp": "--amp"}``: a command-line flag).
    """
    if path is None:
        return config_from_text(None, "defaults", overrides, labels)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    return config_from_text(text, str(path), overrides, labels)


def config_from_text(text: str | None, file_label: str, overrides: Mapping[str, Any] | Iterable[str] = (),
                     labels: Mapping[str, str] | None = None) -> PipelineConfig:
    """:func:`load_config` on YAML text read elsewhere (an object store, a Prefect Variable);
    ``file_label`` names it in errors."""
    data: dict[str, Any] = {}
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{file_label}{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file_label}: expected a mapping of sections at the top level, "
                              f"got {type(loaded).__name__}")
        data = loaded
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    data = _renamed_sections(data)
    overrides = {_renamed_key(k): v for k, v in overrides.items()}
    source_of: dict[str, str] = {}
    for key, value in overrides.items():
        _set_dotted(data, key, value)
        label = (labels or {}).get(key)
        source_of[key] = f"{label} {value!r}" if label else f"override {key}={value!r}"
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source_of, file_label)) from None


def config_to_dict(cfg: BaseModel, *, secrets: bool = False) -> dict[str, Any]:
    """Plain-data view of a config (paths as strings).  Secrets are masked unless asked for."""
    data = cfg.model_dump(mode="json")
    if not secrets:
        _mask_secrets(cfg, data)
    return data


def _mask_secrets(model: BaseModel, data: dict[str, Any]) -> None:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr):
            data[name] = "**********"
        elif isinstance(value, BaseModel):
            _mask_secrets(value, data[name])


def dump_config(cfg: PipelineConfig) -> str:
    """YAML text of the resolved configuration with secrets masked (for display and run records)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)

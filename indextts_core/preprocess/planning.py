"""Planning: read the stage's inputs once, name the feature set, and cut the missing audio into units."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indextts_core.preprocess.clips import Clip, reject_row
from indextts_core.preprocess.settings import FEATURES_VERSION
from indextts_core.store.objects import (
    DIR_MANIFEST,
    ObjectNotFoundError,
    directory_digest,
    local_file_infos,
    read_uri_bytes,
)
from indextts_core.utils.fileio import read_json, sha256_bytes, sha256_file

if TYPE_CHECKING:
    from indextts_core.config import PreprocessConfig
    from indextts_core.model.bundle import ModelBundle
    from indextts_core.preprocess.features import FeatureStore


@dataclass
class TextItem:
    clip: Clip
    frontend_text: str
    ids: list[int]
    lang: int | None = None  # 2.5: the lang_embedding row inference selects


@dataclass
class UnitRecords:
    """What completed units recorded: features (shard, row, code length, duration), rejections, and the
    sha256 of each shard as it was written (units recorded before shards were hashed have none)."""

    done: dict[str, tuple[str, int, int, float]] = field(default_factory=dict)
    rejects: dict[str, str] = field(default_factory=dict)
    shard_sha256: dict[str, str] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        if record.get("shard") and record.get("shard_sha256"):
            self.shard_sha256.setdefault(record["shard"], record["shard_sha256"])
        for row, key in enumerate(record["keys"]):
            code_len, duration = record["lengths"][key]
            self.done.setdefault(key, (record["shard"], row, code_len, duration))
        for key, reason in record["rejects"].items():
            self.rejects.setdefault(key, reason)


@dataclass
class Plan:
    feature_dir: Path
    featureset: str
    texts: dict[str, TextItem]  # clip id -> tokenized text (text gates passed)
    rejects: list[dict[str, Any]]  # text-gate rejections
    keys: dict[str, str]  # clip id -> audio key
    records: UnitRecords  # what earlier runs finished
    units: list[list[tuple[str, str]]]  # work: [(audio key, audio uri)] per unit
    limits: dict[str, int] = field(default_factory=dict)

    @property
    def unit_names(self) -> list[str]:
        return [unit_name([k for k, _ in u]) for u in self.units]


def unit_name(keys: Sequence[str]) -> str:
    return "unit-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:20]


def featureset_id(models: Mapping[str, str], cfg: PreprocessConfig, layer: int) -> str:
    """Names the features: the models' content digests (:func:`model_digests`), the features' version, and the
    settings that change features (``cond_max_seconds``, the model's hidden ``layer``)."""
    ident = {"models": dict(models), "version": FEATURES_VERSION, "cond_max_seconds": cfg.cond_max_seconds,
             "layer": layer}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def model_digests(checkpoint: str, w2v_bert: str | None = None, codec: str | None = None) -> dict[str, str]:
    """The models in a feature set's id: the content digest of the checkpoint folder, and of the Wav2Vec2-BERT
    and codec folders where they are given apart from it ("" where not: they are the checkpoint's ``hf_cache/``,
    which its digest covers)."""
    return {"checkpoint": checkpoint, "w2v_bert": w2v_bert or "", "codec": codec or ""}


def folder_digest(folder: Path) -> str:
    """A folder's content digest as the artifact store records it for a stored folder: over the relative path and
    sha256 of each file (the store's own manifest left out), so a folder and its stored copy give the same."""
    return directory_digest(local_file_infos(folder, skip=[DIR_MANIFEST]).values())


def model_folder_digests(checkpoint_dir: Path, w2v_dir: Path | None = None,
                         codec_dir: Path | None = None) -> dict[str, str]:
    """:func:`model_digests` of local model folders (the folders that the flow's model assets are)."""
    return model_digests(folder_digest(checkpoint_dir), folder_digest(w2v_dir) if w2v_dir else None,
                         folder_digest(codec_dir) if codec_dir else None)


def record_complete(record: dict[str, Any], feature_dir: Path | None = None, present: set[str] | None = None) -> bool:
    """Whether a unit record's shard is still there (in ``feature_dir``, or among the names ``present``).

    A shard deleted as damaged makes its unit count as not done, so the next run recomputes it.
    """
    shard = record.get("shard")
    if not shard:
        return True
    if present is not None:
        return shard in present
    return feature_dir is None or (Path(feature_dir) / shard).is_file()


def read_units(feature_dir: Path) -> UnitRecords:
    """The records of every completed unit in ``feature_dir`` (a unit whose shard is missing is not complete)."""
    records = UnitRecords()
    if feature_dir.is_dir():
        for record_path in sorted(feature_dir.glob("unit-*.json")):
            record = read_json(record_path)
            if record_complete(record, feature_dir):
                records.add(record)
    return records


def tokenize(clips: Sequence[Clip], encoder: Any, max_text_tokens: int,
             max_unk_share: float) -> tuple[dict[str, TextItem], list[dict[str, Any]]]:
    """Every clip's text as inference will encode it (:mod:`indextts_core.text.encoder`); text gates:
    empty, too long, too much <unk>.  2.5: the language row is kept with the ids."""
    items, rejects = {}, []
    for clip in clips:
        line = encoder.encode(clip.text, clip.language)
        ids = line.ids
        reason = None
        if not line.text.strip() or not ids:
            reason = ("empty_text", "no text left after the front-end")
        elif len(ids) > max_text_tokens:
            reason = ("text_too_long", f"{len(ids)} text tokens > max_text_tokens={max_text_tokens}")
        elif line.unknown / len(ids) > max_unk_share:
            reason = ("unknown_tokens", f"{line.unknown} of {len(ids)} tokens are <unk> "
                      f"(> max_unk_share={max_unk_share}); is the tokenizer extended for {clip.language!r}?")
        if reason:
            rejects.append(reject_row(clip, *reason))
        else:
            items[clip.id] = TextItem(clip, line.text, ids, line.lang)
    return items, rejects


def _audio_key(clip: Clip, storage: Any) -> str:
    """What a clip's features are keyed by: its audio's sha256 (as ingest recorded it, else read), or a
    ``missing:`` key that no unit ever finds (the unit then rejects the clip as missing)."""
    if clip.audio_sha256:
        return clip.audio_sha256
    try:
        return sha256_bytes(read_uri_bytes(clip.audio, storage))
    except (ObjectNotFoundError, FileNotFoundError):
        return "missing:" + clip.audio


@dataclass
class Prepared:
    """The stage's inputs, read once: the models, the clips, the tokenizer and front-end, every clip's text as
    inference encodes it (clips the text gates reject apart) and its audio key."""

    bundle: ModelBundle
    clips: list[Clip]
    tokenizer: Path
    frontend: dict[str, Any]  # the front-end's fingerprint
    texts: dict[str, TextItem]  # clip id -> tokenized text (text gates passed)
    rejects: list[dict[str, Any]]  # text-gate rejections
    keys: dict[str, str]  # clip id -> audio key

    @property
    def limits(self) -> dict[str, int]:
        gpt = self.bundle.gpt_config
        return {"max_text_tokens": gpt.max_text_tokens, "max_mel_tokens": gpt.max_mel_tokens}

    @cached_property
    def gpt_sha256(self) -> str:
        """The base GPT's sha256 (its conditioning computed the speaker latents and emotion vectors)."""
        return sha256_file(self.bundle.gpt_path)


def prepare(clips: Sequence[Clip], bundle: ModelBundle, tokenizer_path: Path, frontend: Any, cfg: PreprocessConfig,
            storage: Any | None = None) -> Prepared:
    """Check that the tokenizer was made with this ``frontend``, tokenize and gate every clip's text, and key
    its audio (``storage``: how ``store:`` and ``s3://`` audio is read)."""
    from indextts_core.text.encoder import open_text_encoder
    from indextts_core.text.extend_bpe import check_frontend

    fingerprint = frontend.fingerprint()
    check_frontend(tokenizer_path, fingerprint)
    encoder = open_text_encoder(tokenizer_path, bundle.is_v25, frontend=frontend)
    texts, rejects = tokenize(clips, encoder, bundle.gpt_config.max_text_tokens, cfg.max_unk_share)
    keys = {cid: _audio_key(item.clip, storage) for cid, item in texts.items()}
    return Prepared(bundle, list(clips), Path(tokenizer_path), fingerprint, texts, rejects, keys)


def plan_units(prep: Prepared, features: FeatureStore, unit_clips: int) -> Plan:
    """The work left: units of ``unit_clips`` audio keys that ``features`` has no finished unit for."""
    return make_plan(features.feature_dir, features.featureset, prep.texts, prep.rejects, prep.keys,
                     features.records(), unit_clips, prep.limits)


def make_plan(feature_dir: Path, fset: str, texts: dict[str, TextItem], rejects: list[dict[str, Any]],
              keys: dict[str, str], records: UnitRecords, unit_clips: int, limits: dict[str, int]) -> Plan:
    """Units of ``unit_clips`` audio keys, in a fixed order, of the audio that ``records`` lacks."""
    todo: dict[str, str] = {}
    for cid, key in keys.items():
        if key not in records.done and key not in records.rejects and key not in todo:
            todo[key] = texts[cid].clip.audio
    ordered = sorted(todo.items())  # a fixed order: interrupted runs re-plan the same units
    units = [ordered[i:i + unit_clips] for i in range(0, len(ordered), unit_clips)]
    return Plan(feature_dir, fset, texts, rejects, keys, records, units, limits)

"""Local paths given on the command line, as the artifacts the stage tasks take (and back).

A stage command's path flags name folders that an earlier stage wrote (``dataset/``,
``tokenizers/``, ``processed_data/``) or raw inputs (a manifest, a checkpoint folder).  Folders of
an earlier stage are published to the artifact store content-addressed, exactly as the stage
itself publishes them, so the same content is the same artifact (and hits the same cache) whether
the flow or a command produced it.  Raw inputs become configuration (``ingest.source``,
``download.checkpoint``), so the download stage fetches them as it does in the flow.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from indextts_core.config import AssetSource, ManifestSource, PipelineConfig
from indextts_core.data.manifest import FIELD_ALIASES
from indextts_core.errors import InputError
from indextts_core.layout import BIGVGAN_DIR, CAMPPLUS_FILE, CODEC_FILE, HF_CACHE, W2V_DIR
from indextts_core.store.objects import DIR_MANIFEST, ArtifactStore, open_store
from indextts_core.utils.fileio import atomic_copy
from tasks.artifacts import ArtifactRef, fetch_dir, publish_dir

INGEST_FILES = ("manifest.jsonl", "train.jsonl", "val.jsonl")
PAIR_FILES = ("GPT_pairs_train.jsonl", "GPT_pairs_val.jsonl")


def store_for(cfg: PipelineConfig) -> ArtifactStore:
    return open_store(cfg.storage.uri, cfg.storage)


def publish_files(store: ArtifactStore, files: dict[str, Path], stage: str) -> ArtifactRef:
    """Publish exactly ``files`` (name in the artifact -> local file) as an artifact of ``stage``."""
    for name, path in files.items():
        if not path.is_file():
            raise InputError(f"{path}: not found (needed as {name})")
    with tempfile.TemporaryDirectory(prefix="indextts-given-") as tmp:
        for name, path in files.items():
            dest = Path(tmp) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
        return publish_dir(store, Path(tmp), stage)


def _folder_files(folder: Path, exclude: Iterable[str] = ()) -> dict[str, Path]:
    skip = set(exclude)
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip and not p.name.startswith(".")}


def is_ingest_output(manifest: Path) -> bool:
    return manifest.name == "manifest.jsonl" and all((manifest.parent / n).is_file() for n in INGEST_FILES)


def use_manifests(cfg: PipelineConfig, manifests: Sequence[Path], store: ArtifactStore,
                  fmt: str = "auto", language: str | None = None,
                  speaker: str | None = None, raw: bool = False,
                  fields: dict[str, str] | None = None) -> dict[str, ArtifactRef]:
    """An ingest output folder (``dataset/manifest.jsonl``) is the ingest artifact; anything else (or
    everything, with ``raw``) is data that the ingest stage validates and splits first (its folder
    becomes ``ingest.source``)."""
    manifests = [Path(os.path.abspath(m)) for m in manifests]
    if not raw and len(manifests) == 1 and is_ingest_output(manifests[0]):
        return {"ingest": publish_files(store, _folder_files(manifests[0].parent), "ingest")}
    files: list[Path] = []
    for m in manifests:
        if not m.exists():
            raise InputError(f"{m}: manifest not found")
        files += _dataset_files(m, fields or {})
    folders = [m if m.is_dir() else m.parent for m in manifests] + [f.parent for f in files]
    root = Path(os.path.commonpath(folders))
    cfg.ingest.source = AssetSource(source=str(root), files=sorted({f.relative_to(root).as_posix() for f in files}))
    cfg.ingest.manifests = [ManifestSource(path=m.relative_to(root).as_posix(), format=fmt,  # type: ignore[arg-type]
                                           language=language, speaker=speaker, fields=dict(fields or {}))
                           for m in manifests]
    return {}


def _dataset_files(manifest: Path, fields: dict[str, str]) -> list[Path]:
    """What a raw manifest's dataset is: a folder format's whole folder; for a JSONL manifest, the
    file and the audio files its rows name relative to it (rows that cannot be read, and audio that
    is missing, are left for ingest to reject with the line and the reason).

    Only files that resolve (symlinks followed) inside the manifest's own folder are published: a
    row naming ``../../etc/passwd``, or a symlink pointing out of the folder, adds nothing to the
    dataset asset (ingest rejects such a row as ``audio_outside_dataset``).
    """
    folder = manifest if manifest.is_dir() else manifest.parent
    if manifest.is_dir():
        return [Path(os.path.abspath(p)) for p in sorted(manifest.rglob("*")) if p.is_file() and _inside(p, folder)]
    out = [manifest]
    for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        audio = None
        if isinstance(row, dict):  # the row's audio under our name, the manifest's own, or a common one
            names = ["audio", fields.get("audio", "audio"), *FIELD_ALIASES["audio"]]
            audio = next((row[n] for n in names if isinstance(row.get(n), str)), None)
        if isinstance(audio, str) and "://" not in audio and not Path(audio).is_absolute():
            path = folder / audio
            if path.is_file() and _inside(path, folder):
                out.append(Path(os.path.abspath(path)))
    return out


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, with ``..`` collapsed as text, names a file under ``folder``.

    A manifest's text decides nothing outside its folder (``../../etc/passwd`` is never published);
    symlinks the dataset's owner put inside the folder (audio kept on another disk) are followed, as
    ingest follows them."""
    return Path(os.path.normpath(os.path.abspath(path))).is_relative_to(os.path.normpath(os.path.abspath(folder)))


def use_checkpoint(cfg: PipelineConfig, checkpoint: str, w2v_bert: Path | None = None,
                   codec: Path | None = None) -> None:
    """A checkpoint folder (or ``tiny://N``) and its auxiliary models as the download stage's sources.

    The folder's files are the download defaults (what fine-tuning needs, plus what synthesis and
    the official inference need when present); encoders not given, CAMPPlus and BigVGAN come from
    the folder's ``hf_cache/`` when it has them.
    """
    folder = Path(checkpoint)
    cfg.download.checkpoint = AssetSource(source=str(checkpoint))
    hf = folder / HF_CACHE
    if w2v_bert is None and (folder / W2V_DIR).is_dir():
        w2v_bert = folder / W2V_DIR
    if codec is None and (folder / CODEC_FILE).is_file():
        codec = folder / CODEC_FILE
    if w2v_bert is not None:
        cfg.download.w2v_bert = AssetSource(source=str(w2v_bert))
    if codec is not None:
        cfg.download.semantic_codec = AssetSource(source=str(Path(codec).parent), files=[Path(codec).name])
    if (folder / CAMPPLUS_FILE).is_file():
        cfg.download.campplus = AssetSource(source=str(hf), files=[CAMPPLUS_FILE.name])
    if (folder / BIGVGAN_DIR).is_dir():
        cfg.download.bigvgan = AssetSource(source=str(folder / BIGVGAN_DIR))


def tokenizer_artifact(store: ArtifactStore, model: Path) -> ArtifactRef:
    """The extend-bpe artifact holding ``model``: its whole folder when that folder is an extend-bpe
    output (model, sidecar, reports), else the model and its sidecar alone."""
    model = Path(model).resolve()
    if not model.is_file():
        raise InputError(f"{model}: tokenizer not found")
    folder = model.parent
    known = {model.name, model.with_suffix(".json").name, "report.json", "report.md", "report.png"}
    files = _folder_files(folder)
    if set(files) <= known:
        return publish_files(store, files, "extend-bpe")
    picked = {model.name: model}
    if model.with_suffix(".json").is_file():
        picked[model.with_suffix(".json").name] = model.with_suffix(".json")
    return publish_files(store, picked, "extend-bpe")


def index_artifact(store: ArtifactStore, manifest: Path) -> ArtifactRef:
    """The preprocess artifact: the folder of an index manifest, without pair files made from it."""
    folder = Path(manifest).resolve().parent
    if not (folder / "preprocess.json").is_file():
        raise InputError(f"{manifest}: not a preprocessed index (no preprocess.json next to it; "
                         "run 'indextts-train preprocess' first)")
    skip = {*PAIR_FILES, *(Path(p).with_suffix(s).name for p in PAIR_FILES for s in (".json", ".md"))}
    return publish_files(store, _folder_files(folder, skip), "preprocess")


def pairs_artifact(store: ArtifactStore, train: Path, val: Path | None) -> ArtifactRef:
    """The pairs artifact: the index next to ``train`` plus the two pair files under their stage names."""
    train = Path(train).resolve()
    folder = train.parent
    if train.name == PAIR_FILES[0] and (val is None or Path(val).resolve() == folder / PAIR_FILES[1]):
        return publish_files(store, _folder_files(folder), "pairs")
    files = {n: folder / n for n in ("train_manifest.jsonl", "val_manifest.jsonl", "text_ids.safetensors",
                                     "preprocess.json") if (folder / n).is_file()}
    files[PAIR_FILES[0]] = train
    if val is not None:
        files[PAIR_FILES[1]] = Path(val)
    return publish_files(store, files, "pairs")


def copy_out(store: ArtifactStore, ref: ArtifactRef, dest: Path, cache_dir: Path | None = None,
             names: Iterable[str] | None = None) -> Path:
    """Copy an artifact's files into ``dest`` (each file atomically); other files in ``dest`` stay."""
    src = fetch_dir(store, ref, cache_dir)
    wanted = set(names) if names is not None else None
    for rel, path in _folder_files(src).items():
        if wanted is None or rel in wanted:
            atomic_copy(path, dest / rel)
    return dest


#: Where each auxiliary asset goes in a checkpoint folder (the official code's ``hf_cache/`` names).
HF_CACHE_PLACES = {"w2v_bert": W2V_DIR, "semantic_codec": HF_CACHE, "campplus": HF_CACHE, "bigvgan": BIGVGAN_DIR}
#: What ``indextts/utils/model_download.py`` leaves in ``hf_cache/`` (a trailing ``/``: a folder).
OFFICIAL_HF_CACHE = [f"{W2V_DIR.as_posix()}/", CODEC_FILE.as_posix(), CAMPPLUS_FILE.as_posix(),
                     f"{BIGVGAN_DIR.as_posix()}/config.json", f"{BIGVGAN_DIR.as_posix()}/bigvgan_generator.pt"]


def lay_out_checkpoint(cfg: PipelineConfig, assets: dict[str, Any], dest: Path) -> list[str]:
    """The checkpoint asset's files at ``dest``, the auxiliary assets under ``dest/hf_cache/`` as the
    official ``model_download.py`` leaves them (each file atomically; the semantic codec and CAMPPlus
    under the file names the official code caches them as).  Returns what the official inference
    still lacks there (empty when the folder is complete)."""
    from indextts_core.store.sources import missing_entries

    store = store_for(cfg)
    renamed = {"semantic_codec": (".safetensors", CODEC_FILE), "campplus": (".bin", CAMPPLUS_FILE)}
    for name, place in {"checkpoint": Path(), **HF_CACHE_PLACES}.items():
        if name not in assets:
            continue
        src = fetch_dir(store, ArtifactRef.model_validate(assets[name]), cfg.storage.cache_dir)
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.name != DIR_MANIFEST)
        if name == "bigvgan":  # the folder holding config.json, whatever the asset's own nesting
            src = next((p.parent for p in files if p.name == "config.json"), src)
            files = [p for p in files if p.is_relative_to(src)]
        for path in files:
            target = dest / place / path.relative_to(src)
            if name in renamed and path.suffix == renamed[name][0]:
                target = dest / renamed[name][1]
            atomic_copy(path, target)
    have = [p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()]
    return missing_entries(have) + missing_entries(have, OFFICIAL_HF_CACHE)

"""Asset sources: where an asset comes from, which of the source's files it takes, and what the source holds.

An asset (the base checkpoint folder, the Wav2Vec2-BERT folder, the semantic codec, the dataset)
comes from one of these kinds of source (:func:`source_kind`):

* a local path (a folder, or a single file);
* an ``s3://bucket/prefix`` (any S3-compatible endpoint, credentials as for the store);
* the Hugging Face hub, ``hf://owner/name`` or ``hf://datasets/owner/name``, at a pinned revision,
  through ``huggingface_hub`` (which keeps its own cache; ``offline`` uses only that cache);
* ``tiny://<seed>``: a tiny random model written on the spot (see :mod:`indextts_core.store.download`);
* ``random://<seed>``: the official checkpoint folder at the released shapes with random weights, written
  once (about 8 GB; for rehearsing a real run's sizes on a CPU).

:func:`allow_list` and :func:`optional_list` say which files an asset takes; :func:`list_source`
lists what a source holds with a fingerprint per file and a way to fetch each.  Nothing here
writes to the artifact store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import AssetSource
from indextts_core.errors import DownloadError
from indextts_core.store.objects import open_store, split_s3_uri

#: What fine-tuning needs from a checkpoint folder (an error when the source lacks one).
CHECKPOINT_REQUIRED = ["config.yaml", "gpt.pth", "bpe.model", "wav2vec2bert_stats.pt"]
#: What synthesis and the official inference need besides: taken when the source has them, and the
#: download result names what is absent (:func:`missing_entries`).  ``name/``: a whole folder.
CHECKPOINT_INFERENCE = ["s2mel.pth", "feat1.pt", "feat2.pt", "qwen0.6bemo4-merge/"]
#: Licence and notes the official folder ships, carried along when present.
CHECKPOINT_EXTRAS = ["LICENSE.txt", "LICENSE", "LICENSE_ZH.txt", "DISCLAIMER", "README.md", "glossary.yaml",
                     "pinyin.vocab", "indextts-bundle.json"]

#: Files fetched when an asset's ``files`` allow-list is left out, by source kind (``any``: every
#: other kind).  ``None``: every file.  Entries ending in ``/`` are folders (every file under them).
DEFAULT_FILES: dict[str, dict[str, list[str] | None]] = {
    "checkpoint": {"any": CHECKPOINT_REQUIRED},
    "w2v_bert": {"hf": ["config.json", "model.safetensors", "preprocessor_config.json"], "any": None},
    "semantic_codec": {"hf": ["semantic_codec/model.safetensors"], "any": None},
    "campplus": {"hf": ["campplus_cn_common.bin"], "any": None},
    "bigvgan": {"hf": ["config.json", "bigvgan_generator.pt"], "any": None},
    "asr": {"hf": ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json",
                   "tokenizer_config.json", "vocab.json", "merges.txt", "normalizer.json", "added_tokens.json",
                   "special_tokens_map.json", "model.safetensors"], "any": None},
    "dataset": {"any": None},
}
#: Files taken when the source has them (only when the allow-list is the default one).
OPTIONAL_FILES: dict[str, list[str]] = {"checkpoint": CHECKPOINT_INFERENCE + CHECKPOINT_EXTRAS}


def source_kind(source: str) -> str:
    """``tiny``, ``random``, ``hf``, ``s3`` or ``local``: the kind of source ``source`` names (by its scheme)."""
    if source.startswith("tiny://"):
        return "tiny"
    if source.startswith("random://"):
        return "random"
    if source.startswith("hf://"):
        return "hf"
    if source.startswith("s3://"):
        return "s3"
    return "local"


def allow_list(name: str, src: AssetSource) -> list[str] | None:
    """The files an asset must have (``None``: every file of the source)."""
    if source_kind(src.source) in ("tiny", "random"):
        return None  # the whole generated folder
    if src.files is not None:
        return list(src.files)
    defaults = DEFAULT_FILES.get(name, {"any": None})
    return defaults.get(source_kind(src.source), defaults.get("any"))


def optional_list(name: str, src: AssetSource) -> list[str]:
    """The files an asset takes when its source has them (the default allow-list's optional part)."""
    if source_kind(src.source) in ("tiny", "random") or src.files is not None:
        return []
    return list(OPTIONAL_FILES.get(name, []))


def _hits(entry: str, files: Sequence[str]) -> list[str]:
    """The files an allow-list entry names: itself, or everything under it for a ``folder/`` entry."""
    if entry.endswith("/"):
        return [f for f in files if f.startswith(entry)]
    return [entry] if entry in files else []


def _select(available: list[str], wanted: list[str] | None, optional: list[str]) -> tuple[list[str], str | None]:
    """The available files an allow-list picks, and the first required entry that matches nothing."""
    if wanted is None:
        return sorted(available), None
    chosen: list[str] = []
    for i, entry in enumerate([*wanted, *optional]):
        hits = _hits(entry, available)
        if not hits and i < len(wanted):
            return [], entry
        chosen += [f for f in sorted(hits) if f not in chosen]
    return chosen, None


def missing_entries(files: Sequence[str], entries: Sequence[str] = CHECKPOINT_INFERENCE) -> list[str]:
    """The ``entries`` (files, or ``folder/``) that ``files`` lacks; by default what the official inference
    needs from a checkpoint folder besides what fine-tuning needs."""
    return [e for e in entries if not _hits(e, files)]


@dataclass
class Listing:
    """What a source holds: relative path -> fingerprint (changes when the content may have)."""

    files: dict[str, str]
    fetch: Callable[[str, Path], Path]  # copy one relative path to a local staging file, return it
    commit: str | None = None  # hub sources: the commit the revision resolved to


def _local_listing(name: str, src: AssetSource) -> Listing:
    root = Path(src.source).expanduser()
    if not root.exists():
        raise DownloadError(f"{name}: source {root} does not exist")
    if root.is_file():
        single = root
        root = root.parent
        names = [single.name]
    else:
        wanted, optional = allow_list(name, src), optional_list(name, src)
        if wanted is not None and not optional and not any(e.endswith("/") for e in wanted):
            names = wanted  # plain file names: no need to walk the folder
        else:
            names, absent = _select(
                [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()], wanted, optional)
            if absent:
                raise DownloadError(f"{name}: file '{absent}' not found in {root}")
    files = {}
    for rel in names:
        path = root / rel
        if not path.is_file():
            raise DownloadError(f"{name}: file '{rel}' not found in {root}")
        st = path.stat()
        files[rel] = f"{st.st_size}:{st.st_mtime_ns}"
    return Listing(files, lambda rel, _staging: root / rel)


def _s3_listing(name: str, src: AssetSource, storage: Any) -> Listing:
    bucket, prefix = split_s3_uri(src.source)
    store = open_store(f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", storage)
    available: dict[str, str] = {}
    paginator = store.client.get_paginator("list_objects_v2")
    strip = len(prefix) + 1 if prefix else 0
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
        for obj in page.get("Contents", []):
            available[obj["Key"][strip:]] = f"{obj['Size']}:{obj['ETag']}"
    if not available:
        raise DownloadError(f"{name}: nothing found at {src.source}")
    chosen, absent = _select(list(available), allow_list(name, src), optional_list(name, src))
    if absent:
        raise DownloadError(f"{name}: file '{absent}' not found at {src.source}")
    available = {f: available[f] for f in chosen}

    def fetch(rel: str, staging: Path) -> Path:
        return store.get_file(rel, staging / rel)

    return Listing(available, fetch)


def _hf_listing(name: str, src: AssetSource, cache_dir: Path | None, offline: bool) -> Listing:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo = src.source.removeprefix("hf://")
    repo_type = "model"
    if repo.startswith("datasets/"):
        repo_type, repo = "dataset", repo.removeprefix("datasets/")
    offline = offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    where = f"hf://{'datasets/' if repo_type == 'dataset' else ''}{repo}@{src.revision}"
    wanted = allow_list(name, src)

    def explain(e: Exception, rel: str | None) -> DownloadError:
        what = f"file '{rel}'" if rel else "snapshot"
        if isinstance(e, LocalEntryNotFoundError):
            return DownloadError(
                f"{name}: {what} of {where} is not in the Hugging Face cache"
                f" ({cache_dir or 'default cache'}) and offline mode is on" if offline else
                f"{name}: {what} of {where} could not be fetched: {e}"
            )
        if isinstance(e, RevisionNotFoundError):
            return DownloadError(f"{name}: revision {src.revision!r} not found for {where}")
        if isinstance(e, RepositoryNotFoundError):
            return DownloadError(f"{name}: repository {repo!r} not found (or gated) for {where}")
        if isinstance(e, EntryNotFoundError) or "404" in str(e):
            return DownloadError(f"{name}: {what} not found in {where}")
        return DownloadError(f"{name}: {what} of {where} could not be fetched: {e}")

    def snapshot(patterns: list[str] | None) -> dict[str, Path]:
        snap = Path(snapshot_download(repo, repo_type=repo_type, revision=src.revision, cache_dir=cache_dir,
                                      local_files_only=offline, allow_patterns=patterns))
        return {p.relative_to(snap).as_posix(): p for p in sorted(snap.rglob("*")) if p.is_file()}

    paths: dict[str, Path] = {}
    try:
        if wanted is None:
            paths = snapshot(None)
        else:
            for i, rel in enumerate([*wanted, *optional_list(name, src)]):
                required = i < len(wanted)
                try:
                    if rel.endswith("/"):  # a folder: every file under it
                        found = {k: v for k, v in snapshot([f"{rel}*"]).items() if k.startswith(rel)}
                        if not found and required:
                            raise EntryNotFoundError(f"no file under {rel}")
                        paths |= found
                    else:
                        paths[rel] = Path(hf_hub_download(repo, rel, repo_type=repo_type, revision=src.revision,
                                                          cache_dir=cache_dir, local_files_only=offline))
                except (EntryNotFoundError, HfHubHTTPError, OSError) as e:
                    if required:
                        raise explain(e, rel) from None
                    # optional: absent from the repository (or, offline, from the cache); reported by the caller
    except DownloadError:
        raise
    except (EntryNotFoundError, HfHubHTTPError, OSError) as e:
        raise explain(e, None) from None
    # a pinned revision is immutable: the fingerprint is the revision itself
    commits = {p.parts[p.parts.index("snapshots") + 1] for p in paths.values() if "snapshots" in p.parts[:-1]}
    return Listing({rel: str(src.revision) for rel in paths}, lambda rel, _staging: paths[rel],
                   commits.pop() if len(commits) == 1 else None)


def list_source(name: str, src: AssetSource, hf_cache_dir: Path | None, offline: bool, storage: Any) -> Listing:
    """What the (local, S3 or hub) source of asset ``name`` holds of the files the asset takes."""
    kind = source_kind(src.source)
    if kind == "hf":
        return _hf_listing(name, src, hf_cache_dir, offline)
    if kind == "s3":
        return _s3_listing(name, src, storage)
    return _local_listing(name, src)

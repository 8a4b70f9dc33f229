"""Download stage: bring every asset a run needs into the artifact store.

An asset (the base checkpoint folder, the Wav2Vec2-BERT folder, the semantic codec, the dataset)
comes from one of three kinds of source:

* a local path (a folder, or a single file);
* an ``s3://bucket/prefix`` (any S3-compatible endpoint, credentials as for the store);
* the Hugging Face hub, ``hf://owner/name`` or ``hf://datasets/owner/name``, at a pinned revision,
  through ``huggingface_hub`` (which keeps its own cache; ``offline`` uses only that cache).

Each asset lands under ``assets/<name>/<id>/`` in the store, where ``<id>`` is derived from the
source, revision and allow-list, next to a record ``assets/<name>/<id>.json`` with every file's
size and sha256.  A second run reuses what is there: hub files at a pinned revision are immutable;
local and S3 sources are re-checked (size and modification time or ETag, and the content hash
when those changed) and fetched again only if their content changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import AssetSource, PipelineConfig
from indextts_core.errors import DownloadError
from indextts_core.utils.fileio import sha256_file
from indextts_core.store.objects import ArtifactStore, ObjectInfo, ObjectNotFoundError, open_store, split_s3_uri

log = logging.getLogger(__name__)

#: Version of the tiny bundle generator (part of a tiny:// asset's identity).
TINY_VERSION = "4"  # 4: the Qwen tokenizer config transformers 4.52 reads

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


@dataclass(frozen=True)
class FetchedAsset:
    name: str
    source: str
    revision: str | None
    prefix: str  # key prefix of the asset's folder in the store
    uri: str  # URI of that folder
    files: tuple[ObjectInfo, ...]
    reused: bool
    commit: str | None = None  # the hub commit the revision named when it was fetched (hub sources)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _kind(source: str) -> str:
    if source.startswith("tiny://"):
        return "tiny"
    if source.startswith("hf://"):
        return "hf"
    if source.startswith("s3://"):
        return "s3"
    return "local"


def allow_list(name: str, src: AssetSource) -> list[str] | None:
    """The files an asset must have (``None``: every file of the source)."""
    if _kind(src.source) == "tiny":
        return None  # the whole generated folder
    if src.files is not None:
        return list(src.files)
    defaults = DEFAULT_FILES.get(name, {"any": None})
    return defaults.get(_kind(src.source), defaults.get("any"))


def optional_list(name: str, src: AssetSource) -> list[str]:
    """The files an asset takes when its source has them (the default allow-list's optional part)."""
    if _kind(src.source) == "tiny" or src.files is not None:
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


def asset_prefix(name: str, src: AssetSource) -> str:
    """Store prefix of an asset; stable for the same source, revision and allow-list."""
    files = allow_list(name, src)
    optional = optional_list(name, src)
    ident = json.dumps(
        {"source": src.source, "revision": src.revision, "files": files, **({"optional": optional} if optional else {})},
        sort_keys=True)
    return f"assets/{name}/{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


# ------------------------------------------------------------------------ sources


@dataclass
class _Listing:
    """What a source holds: relative path -> fingerprint (changes when the content may have)."""

    files: dict[str, str]
    fetch: Callable[[str, Path], Path]  # copy one relative path to a local staging file, return it
    commit: str | None = None  # hub sources: the commit the revision resolved to


def _local_listing(name: str, src: AssetSource) -> _Listing:
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
    return _Listing(files, lambda rel, _staging: root / rel)


def _s3_listing(name: str, src: AssetSource, storage: Any) -> _Listing:
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

    return _Listing(available, fetch)


def _hf_listing(name: str, src: AssetSource, cache_dir: Path | None, offline: bool) -> _Listing:
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
    return _Listing({rel: str(src.revision) for rel in paths}, lambda rel, _staging: paths[rel],
                    commits.pop() if len(commits) == 1 else None)


# ------------------------------------------------------------------------ fetching


def _reusable(store: ArtifactStore, record_key: str, prefix: str, listing: _Listing, kind: str,
              sources: dict[str, Path] | None) -> dict[str, Any] | None:
    """The stored record if the asset in the store still matches its source, else None."""
    if not (store.exists(record_key) and store.dir_exists(prefix)):
        return None
    record = store.get_json(record_key)
    stored = {f["key"]: f for f in record["files"]}
    if set(stored) != set(listing.files):
        return None
    if record.get("fingerprints") == listing.files:
        return record
    if kind == "local" and sources is not None:
        # size/mtime changed (touched, copied): same bytes?
        if all(sha256_file(sources[rel]) == stored[rel]["sha256"] for rel in listing.files):
            record["fingerprints"] = listing.files
            store.put_json(record, record_key)
            return record
    return None


def _tiny_seed(src: AssetSource) -> tuple[int, str]:
    """``tiny://<seed>`` -> (seed, "2.0"); ``tiny://<seed>@2.5`` -> (seed, "2.5")."""
    seed_text, _, version = src.source.removeprefix("tiny://").partition("@")
    seed_text = seed_text or "0"
    if not seed_text.isdigit() or version not in ("", "2.0", "2.5"):
        raise DownloadError(f"{src.source}: expected tiny://<integer seed> or tiny://<integer seed>@2.5")
    return int(seed_text), version or "2.0"


def _fetch_tiny(name: str, src: AssetSource, store: ArtifactStore) -> FetchedAsset:
    """tiny://<seed>: a tiny random model folder written on the spot (nothing is downloaded).

    The ``asr`` asset gets a tiny Whisper, every other asset a tiny IndexTTS-2 checkpoint folder
    (``tiny://<seed>@2.5``: the IndexTTS-2.5 layout).
    """
    seed, version = _tiny_seed(src)
    tag = f"tiny:{seed}:{TINY_VERSION}" + (f":{version}" if version != "2.0" else "")
    prefix = asset_prefix(name, src)
    record_key = f"{prefix}.json"
    record = store.get_json(record_key) if store.exists(record_key) and store.dir_exists(prefix) else None
    reused = record is not None and set(record.get("fingerprints", {}).values()) == {tag}
    if not reused:
        from indextts_core.tiny import write_tiny_whisper
        from indextts_core.tiny import write_tiny_bundle

        with tempfile.TemporaryDirectory(prefix="indextts-tiny-") as staging:
            if name == "asr":
                write_tiny_whisper(staging, seed=seed)
            else:
                write_tiny_bundle(staging, seed=seed, version=version)
            files = {p.relative_to(staging).as_posix(): p for p in Path(staging).rglob("*") if p.is_file()}
            info = store.put_files(files, prefix)
        record = {"name": name, "source": src.source, "revision": None,
                  "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in info.files],
                  "fingerprints": {f.key: tag for f in info.files}}
        store.put_json(record, record_key)
        log.info("%s: wrote a tiny random model (seed %d) to %s", name, seed, store.uri_for(prefix))
    assert record is not None
    files_ = tuple(ObjectInfo(f["key"], f["size"], f["sha256"]) for f in record["files"])
    return FetchedAsset(name, src.source, None, prefix, store.uri_for(prefix), files_, reused)


def _listing(name: str, src: AssetSource, hf_cache_dir: Path | None, offline: bool, storage: Any) -> _Listing:
    kind = _kind(src.source)
    if kind == "hf":
        return _hf_listing(name, src, hf_cache_dir, offline)
    if kind == "s3":
        return _s3_listing(name, src, storage)
    return _local_listing(name, src)


def source_fingerprint(name: str, src: AssetSource, storage: Any | None = None) -> str:
    """A cheap identity of what the source holds now (sizes and modification times or ETags).

    Nothing is downloaded: a hub source at a pinned revision is identified by the revision, a tiny
    source by its seed.
    """
    if _kind(src.source) in ("hf", "tiny"):
        files: Any = {"revision": src.revision, "files": allow_list(name, src), "tiny": TINY_VERSION}
    else:
        files = _listing(name, src, None, False, storage).files
    ident = json.dumps({"source": src.source, "revision": src.revision, "files": files}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()


def fetch_asset(
    name: str,
    src: AssetSource,
    store: ArtifactStore,
    *,
    hf_cache_dir: Path | None = None,
    offline: bool = False,
    storage: Any | None = None,
) -> FetchedAsset:
    """Make sure ``store`` holds the asset ``name`` from ``src``; fetch only what is missing or changed."""
    kind = _kind(src.source)
    if kind == "tiny":
        return _fetch_tiny(name, src, store)
    listing = _listing(name, src, hf_cache_dir, offline, storage)
    prefix = asset_prefix(name, src)
    record_key = f"{prefix}.json"
    local_sources = None
    if kind == "local":
        local_sources = {rel: listing.fetch(rel, Path()) for rel in listing.files}
    record = _reusable(store, record_key, prefix, listing, kind, local_sources)
    reused = record is not None
    if record is None:
        with tempfile.TemporaryDirectory(prefix="indextts-download-") as staging:
            local = {rel: listing.fetch(rel, Path(staging)) for rel in listing.files}
            info = store.put_files(local, prefix)
        record = {
            "name": name,
            "source": src.source,
            "revision": src.revision,
            "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in info.files],
            "fingerprints": listing.files,
            **({"commit": listing.commit} if listing.commit else {}),
        }
        store.put_json(record, record_key)
        log.info("%s: fetched %d file(s), %.1f MB from %s", name, len(info.files),
                 info.total_bytes / 1e6, src.source)
    else:
        log.info("%s: reusing %s (%d file(s), unchanged at the source)", name, store.uri_for(prefix),
                 len(record["files"]))
    files = tuple(ObjectInfo(f["key"], f["size"], f["sha256"]) for f in record["files"])
    return FetchedAsset(name, src.source, src.revision, prefix, store.uri_for(prefix), files, reused,
                        listing.commit or record.get("commit"))


def configured_assets(cfg: PipelineConfig) -> dict[str, AssetSource]:
    """The assets a run needs, by name, in fetch order."""
    assets = {
        "checkpoint": cfg.download.checkpoint,
        "w2v_bert": cfg.download.w2v_bert,
        "semantic_codec": cfg.download.semantic_codec,
        "campplus": cfg.download.campplus,
        "bigvgan": cfg.download.bigvgan,
        "asr": cfg.download.asr,
        "dataset": cfg.ingest.source,
    }
    return {k: v for k, v in assets.items() if v is not None}


def download(cfg: PipelineConfig, store: ArtifactStore) -> dict[str, FetchedAsset]:
    """Fetch every configured asset into ``store``."""
    out = {}
    for name, src in configured_assets(cfg).items():
        try:
            out[name] = fetch_asset(name, src, store, hf_cache_dir=cfg.download.hf_cache_dir,
                                    offline=cfg.download.offline, storage=cfg.storage)
        except ObjectNotFoundError as e:
            raise DownloadError(f"{name}: {e}") from None
    for name, (given, commit) in pins(out).items():
        log.info("%s: revision %r of %s is commit %s; `indextts-train download --config <file> --pin` writes it "
                 "into the config so later runs cannot drift", name, given, out[name].source, commit)
    if "checkpoint" in out:
        lacking = missing_entries([f.key for f in out["checkpoint"].files])
        if lacking:  # fine-tuning runs; synthesis, evaluation and the official inference on the export need them
            log.warning("checkpoint %s has no %s: training works, but synthesis, the evaluation and the official "
                        "inference on the export need them (fetch the complete official folder)",
                        out["checkpoint"].source, ", ".join(lacking))
    return out


COMMIT_RE = re.compile(r"[0-9a-f]{40}")


def pins(assets: dict[str, FetchedAsset]) -> dict[str, tuple[str, str]]:
    """Hub assets whose revision is not a commit yet: name -> (the revision given, the commit it named)."""
    return {n: (a.revision or "", a.commit) for n, a in assets.items()
            if a.commit and a.revision and not COMMIT_RE.fullmatch(a.revision)}


def pin_config_text(text: str, found: dict[str, tuple[str, str]], sources: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` (a run YAML) with each ``revision: <branch or tag>`` of the assets in ``found`` replaced by
    the commit, comments and layout kept.  ``sources``: asset name -> its ``hf://`` source.  Returns the
    new text and the assets it could not edit (a layout other than ``{source: ..., revision: ...}`` on
    one line or ``source:`` with ``revision:`` in the lines right below it)."""
    lines = text.splitlines(keepends=True)
    left = []
    for name, (given, commit) in found.items():
        src = re.escape(sources[name])
        done = False
        for i, line in enumerate(lines):
            if not re.search(rf"source:\s*['\"]?{src}['\"]?\s*[,}}#\n]", line + "\n"):
                continue
            for j in range(i, min(i + 4, len(lines))):
                new = re.sub(rf"(revision:\s*)['\"]?{re.escape(given)}['\"]?(?=\s*[,}}#\n])", rf"\g<1>{commit}",
                             lines[j] if lines[j].endswith("\n") else lines[j] + "\n", count=1)
                if new.rstrip("\n") != lines[j].rstrip("\n"):
                    lines[j] = new if lines[j].endswith("\n") else new.rstrip("\n")
                    done = True
                    break
            if done:
                break
        if not done:
            left.append(name)
    return "".join(lines), left

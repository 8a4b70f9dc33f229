"""Download stage: bring every asset a run needs into the artifact store, reuse what is there, pin hub revisions.

Where an asset comes from and which of its files it takes is :mod:`indextts_core.store.sources`.
Each asset lands under ``assets/<name>/<id>/`` in the store, where ``<id>`` is derived from the
source, revision and allow-list, next to a record ``assets/<name>/<id>.json`` with every file's
size and sha256.  A second run reuses what is there: hub files at a pinned revision are immutable;
local and S3 sources are re-checked (size and modification time or ETag, and the content hash
when those changed) and fetched again only if their content changed.  A hub revision that is a
branch or tag can be pinned to the commit it named (:func:`pins`, :func:`pin_config_text`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indextts_core.config import AssetSource, PipelineConfig
from indextts_core.errors import DownloadError
from indextts_core.store.objects import ArtifactStore, ObjectInfo, ObjectNotFoundError
from indextts_core.store.sources import Listing, allow_list, list_source, missing_entries, optional_list, source_kind
from indextts_core.utils.fileio import sha256_file

log = logging.getLogger(__name__)

#: Version of the tiny bundle generator (part of a tiny:// asset's identity).
TINY_VERSION = "4"  # 4: the Qwen tokenizer config transformers 4.52 reads


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


def asset_prefix(name: str, src: AssetSource) -> str:
    """Store prefix of an asset; stable for the same source, revision and allow-list."""
    files = allow_list(name, src)
    optional = optional_list(name, src)
    ident = json.dumps({"source": src.source, "revision": src.revision, "files": files,
                        **({"optional": optional} if optional else {})}, sort_keys=True)
    return f"assets/{name}/{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def _reusable(store: ArtifactStore, record_key: str, prefix: str, listing: Listing, kind: str,
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


def _random_seed(src: AssetSource) -> int:
    """``random://<seed>`` -> seed (the IndexTTS-2 layout; ``random://<seed>@2.0`` says the same)."""
    seed_text, _, version = src.source.removeprefix("random://").partition("@")
    seed_text = seed_text or "0"
    if not seed_text.isdigit() or version not in ("", "2.0"):
        raise DownloadError(f"{src.source}: expected random://<integer seed> (the IndexTTS-2 layout at the "
                            "released shapes; 2.5 is not written)")
    return int(seed_text)


def _fetch_generated(name: str, src: AssetSource, store: ArtifactStore, tag: str,
                     write: Callable[[Path], None], what: str) -> FetchedAsset:
    """A model folder ``write`` makes in a staging folder, put into the store once: its record's
    fingerprints are ``tag``, so a second run with the same tag reuses it without writing anything."""
    prefix = asset_prefix(name, src)
    record_key = f"{prefix}.json"
    record = store.get_json(record_key) if store.exists(record_key) and store.dir_exists(prefix) else None
    reused = record is not None and set(record.get("fingerprints", {}).values()) == {tag}
    if not reused:
        with store.staging("generated") as staging:  # a local store's own folder: the files are linked, not copied
            write(staging)
            files = {p.relative_to(staging).as_posix(): p for p in staging.rglob("*") if p.is_file()}
            info = store.put_files(files, prefix, link=True)
        record = {"name": name, "source": src.source, "revision": None,
                  "files": [{"key": f.key, "size": f.size, "sha256": f.sha256} for f in info.files],
                  "fingerprints": {f.key: tag for f in info.files}}
        store.put_json(record, record_key)
        log.info("%s: wrote %s to %s", name, what, store.uri_for(prefix))
    assert record is not None
    files_ = tuple(ObjectInfo(f["key"], f["size"], f["sha256"]) for f in record["files"])
    return FetchedAsset(name, src.source, None, prefix, store.uri_for(prefix), files_, reused)


def _fetch_tiny(name: str, src: AssetSource, store: ArtifactStore) -> FetchedAsset:
    """tiny://<seed>: a tiny random model folder written on the spot (nothing is downloaded).

    The ``asr`` asset gets a tiny Whisper, the ``speaker_verifier`` asset a tiny WavLM x-vector model,
    every other asset a tiny IndexTTS-2 checkpoint folder (``tiny://<seed>@2.5``: the IndexTTS-2.5 layout).
    """
    seed, version = _tiny_seed(src)
    tag = f"tiny:{seed}:{TINY_VERSION}" + (f":{version}" if version != "2.0" else "")

    def write(staging: Path) -> None:
        from indextts_core.tiny import write_tiny_bundle, write_tiny_whisper, write_tiny_xvector

        if name == "asr":
            write_tiny_whisper(staging, seed=seed)
        elif name == "speaker_verifier":
            write_tiny_xvector(staging, seed=seed)
        else:
            write_tiny_bundle(staging, seed=seed, version=version)

    return _fetch_generated(name, src, store, tag, write, f"a tiny random model (seed {seed})")


def _fetch_random(name: str, src: AssetSource, store: ArtifactStore) -> FetchedAsset:
    """random://<seed>: the official IndexTTS-2 checkpoint folder at the released shapes with random
    weights (:func:`indextts_core.tiny.full.write_full_bundle`, about 8 GB), written once.

    Like ``tiny://``, the folder carries its encoders, CAMPPlus and BigVGAN in ``hf_cache/``, so only
    ``download.checkpoint`` takes this source.
    """
    if name != "checkpoint":
        raise DownloadError(f"{name}: random:// writes a whole checkpoint folder (its encoders, CAMPPlus and "
                            "BigVGAN inside its hf_cache/); give it as download.checkpoint and leave "
                            f"download.{name} out")
    seed = _random_seed(src)
    from indextts_core.tiny.full import FULL_VERSION

    def write(staging: Path) -> None:
        from indextts_core.tiny.full import write_full_bundle

        write_full_bundle(staging, seed=seed)

    return _fetch_generated(name, src, store, f"random:{seed}:{FULL_VERSION}", write,
                            f"a full-size random checkpoint (seed {seed})")


def source_fingerprint(name: str, src: AssetSource, storage: Any | None = None) -> str:
    """A cheap identity of what the source holds now (sizes and modification times or ETags).

    Nothing is downloaded: a hub source at a pinned revision is identified by the revision, a tiny or
    random source by its seed.
    """
    kind = source_kind(src.source)
    if kind in ("hf", "tiny", "random"):
        files: Any = {"revision": src.revision, "files": allow_list(name, src), "tiny": TINY_VERSION}
        if kind == "random":
            from indextts_core.tiny.full import FULL_VERSION

            files["random"] = FULL_VERSION
    else:
        files = list_source(name, src, None, False, storage).files
    ident = json.dumps({"source": src.source, "revision": src.revision, "files": files}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()


#: Source kinds whose files a local store keeps as hard links rather than copies: S3 objects are
#: fetched into the store's staging folder, and the Hugging Face cache replaces its files by renaming
#: and never rewrites them.  Local sources are copied: their owner may well edit them in place.
LINKED_SOURCES = ("s3", "hf")


def fetch_asset(
    name: str,
    src: AssetSource,
    store: ArtifactStore,
    *,
    hf_cache_dir: Path | None = None,
    offline: bool = False,
    storage: Any | None = None,
) -> FetchedAsset:
    """Make sure ``store`` holds the asset ``name`` from ``src``; fetch only what is missing or changed.

    What is fetched is written once and read once (hashed as it is stored): see :data:`LINKED_SOURCES`.
    """
    kind = source_kind(src.source)
    if kind == "tiny":
        return _fetch_tiny(name, src, store)
    if kind == "random":
        return _fetch_random(name, src, store)
    listing = list_source(name, src, hf_cache_dir, offline, storage)
    prefix = asset_prefix(name, src)
    record_key = f"{prefix}.json"
    local_sources = None
    if kind == "local":
        local_sources = {rel: listing.fetch(rel, Path()) for rel in listing.files}
    record = _reusable(store, record_key, prefix, listing, kind, local_sources)
    reused = record is not None
    if record is None:
        with store.staging("download") as staging:
            local = {rel: listing.fetch(rel, staging) for rel in listing.files}
            info = store.put_files(local, prefix, link=kind in LINKED_SOURCES)
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
        "speaker_verifier": cfg.download.speaker_verifier,
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

"""The whole ``finetune`` flow on a few demo clips, measured: time, memory and disk per stage, copies and reads of
every large file.

    uv run python benchmarks/full_size_rehearsal.py --large-mb 0.5                      # tiny base: a few minutes
    uv run python benchmarks/full_size_rehearsal.py --checkpoint random://0 --json before.json   # released shapes
    uv run python benchmarks/full_size_rehearsal.py --checkpoint random://0 --compare before.json --json after.json

The models are random (``tiny://<seed>``: tiny ones; ``random://<seed>``: every model of the official folder at
the released shapes), so nothing here says anything about quality: only what the pipeline costs at that size.
At the released shapes it needs room: the first run here (2 cores, 24 GB, issue 30) wrote 28 GB by the middle of
training and reached 21.4 GB of RSS in the train stage, where the memory guard (below) stopped it.

What runs: the ``finetune`` flow in this process (a temporary Prefect API from ``prefect_test_harness``, MLflow on
a sqlite file), on CPU, on ``--clips`` clips of the bundled demo dataset from ``--speakers`` speakers (copied with
their manifest into a folder of their own, the run's ``ingest.source``), with ``train.max_steps`` 2 (``--steps``), one
validation at the end (plus the step-0 baseline the trainer always measures), no audio or decoding during
training, the export and its registration (the train stage does both), an evaluation of at most
``--eval-items`` items per language and group (ingest holds out one clip per speaker: two items; no paragraph
or emotion probe; the base model and the fine-tuned one) and promotion.  Every output lives under one temporary
root: the store (``storage.uri``), the cache (``storage.cache_dir``, also ``$INDEXTTS_CACHE``), the run folder
(``run.output_dir``), MLflow's database and artifact folder, ``$PREFECT_HOME``.  ``--keep DIR`` uses (and keeps)
DIR instead; ``--set key=value`` adds any configuration override (``--set train.batch_tokens=2048``).

How it measures (none of it changes what the flow does):

* **Stages.**  ``PipelineRun.stage`` and ``PipelineRun.call`` are wrapped: the stage running is the task's name
  (the helper tasks belong to a stage: ``preprocess-plan`` to preprocess, ``champion`` to evaluate, which it
  decides the models of); it stays the current stage until the next one starts (so the preprocess work units,
  which run between the plan and the index, count as preprocess), and what runs outside a stage (the flow's
  setup, its summary) is ``flow``.  Seconds are the wrapper's own (``summary s``: the flow's ``RunSummary``).
* **Memory.**  A thread reads the process's RSS (psutil) every 50 ms and keeps the largest value per stage; the
  whole run's peak is ``getrusage(RUSAGE_SELF).ru_maxrss`` (imports included).  Child processes (the Prefect
  server, any worker process) are not counted.
* **Bytes.**  At every change of stage each location is measured (regular files, each inode once; links are not
  bytes): the ``GB`` columns are each location's growth during the stage (net: what a stage deletes counts
  against it), ``written``/``read`` the process's write_chars/read_chars in that stage (/proc: every write and
  read call, page cache and sockets included).  Locations: ``store``, ``cache``, ``run`` (the run folder less
  the next two), ``ckpts`` (``trained_ckpts/`` less the exports), ``export`` (``trained_ckpts/*/export``),
  ``mlflow`` (its artifact folder), ``registry`` (a model version's source when it is a folder of its own, not
  the store's), ``source`` (the dataset folder), ``other`` (the rest of the root: MLflow's database, Prefect's
  home) and any ``--watch NAME=PATH``; large files written elsewhere and still there at the end (a model cache
  outside the root) are found from the write opens the audit hook saw (``torch.save`` to a path and
  ``safetensors.torch.save_file`` write from C++/Rust, unseen by the hook: they are wrapped to note the path) and
  listed as ``elsewhere``.
* **Large files** (``--large-mb``, default 100): at the end every file of at least that size in any location is
  grouped by content (sha256, computed only for files whose size another file shares): ``copies`` = distinct
  inodes with that content (hard links are one copy, symbolic links none), where each copy lives (a content is
  named by its first copy's folder, digests elided, and its file names), and ``reads`` = opens for reading
  during the run, from a ``sys.addaudithook`` hook on the ``open`` event (a mode without w/a/x/+, or flags
  without O_WRONLY/O_RDWR/O_CREAT/O_APPEND/O_TRUNC), which sees ``open()``, ``io``, ``os.open``, ``shutil``
  copies, hashing, ``np.load`` and ``torch.load`` (a ``torch.load(..., mmap=True)`` opens the file too, and is
  marked ``mmap``: it maps the file rather than reading it; ``torch.load`` is wrapped only to name the reader).
  ``safetensors`` opens files in Rust, unseen by the hook: ``safetensors.safe_open`` is wrapped instead (it is
  what ``load_file`` and ``transformers`` call), and those reads are marked ``safetensors``.  An open is counted
  as a read of a whole file: the hook cannot see how much was read.  At each read open the file's inode, size and
  mtime are recorded; a read counts for the content found at the end under the same inode, size and mtime, so a
  read of a file replaced or deleted later (a temporary copy, a staging folder) cannot be mapped to content:
  those reads are listed under ``(gone or replaced)`` by name (reads of files outside every location that are
  unchanged at the end, the libraries' own files, are left out).  What other processes read is not seen.

``--json out.json`` saves every number (and, while the run goes, ``out.progress.json``: the stages that
ended, with their seconds and peak RSS, and the running one's peak so far: all there is when the kernel's OOM
killer ends the run); ``--compare before.json`` prints a saved run next to this one with the
ratios (large files are matched by name and size).  A run that fails, or that this script interrupts, still
prints what it measured until then: it interrupts the flow when the disk has less than ``--min-free-gb`` (8)
free or the machine less than ``--min-available-gb`` (1.5) of memory available (the machine is shared), and
after ``--max-minutes``.  (Ctrl-C or ``timeout -s INT`` work too, but they stop the temporary Prefect server as
well, and the flow then spends minutes retrying it before it gives up.)  Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import shutil
import stat
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEMO = REPO / "indextts_core" / "demo" / "dataset"
STAGE_ORDER = ("download", "curate", "ingest", "corpus", "extend-bpe", "preprocess", "pairs", "train", "evaluate",
               "promote", "flow")
#: Helper tasks (``PipelineRun.call``) and the stage they belong to.
HELPERS = {"preprocess-plan": "preprocess", "champion": "evaluate"}
GB = 1024 ** 3
MB = 1024 ** 2


# ---------------------------------------------------------------------------------------------------- the watchers

@dataclass
class Read:
    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    via: str
    stage: str


@dataclass
class Watch:
    """What the hooks and the sampler record; ``stage`` is the stage running now."""

    large: int
    stage: str = "flow"
    active: bool = False
    reads: list[Read] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    peak: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None  # why the guard interrupted the run
    local: threading.local = field(default_factory=threading.local)
    progress: Path | None = None  # --json's ``.progress.json``: what a run killed from outside (OOM) got to
    finished: list[dict[str, Any]] = field(default_factory=list)  # stages that ended: seconds, peak RSS

    def save_progress(self) -> None:
        """Write the stages that ended and the running one's peak so far (atomically, every second while the run
        goes): the kernel's OOM killer sends SIGKILL, after which nothing of this process can print."""
        if self.progress is None:
            return
        state = {"finished": self.finished, "running": self.stage, "running_peak_rss": self.peak.get(self.stage, 0),
                 "time": time.strftime("%H:%M:%S")}
        tmp = self.progress.with_name(f".{self.progress.name}.tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, self.progress)

    def read(self, path: str, via: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if st.st_size >= self.large and stat.S_ISREG(st.st_mode):
            self.reads.append(Read(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, via, self.stage))


def install_hooks(watch: Watch) -> None:
    """The audit hook on ``open``, and the wrappers that name how a file was read (torch.load, safetensors).
    Before anything imports torch, safetensors or transformers, so that every later import sees the wrappers."""
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event: str, args: tuple) -> None:
        if event != "open" or not watch.active:
            return
        try:
            path, mode, flags = args
            if isinstance(path, int):
                return
            path = os.path.abspath(os.fsdecode(path))
            writing = (bool(flags & write_flags) if mode is None or not isinstance(mode, str)
                       else any(c in mode for c in "wax+"))
            if writing:
                watch.written.add(path)
            else:
                watch.read(path, getattr(watch.local, "via", None) or "open")
        except Exception:  # noqa: BLE001 - a measuring hook must never break an open
            pass

    sys.addaudithook(hook)

    import safetensors
    import safetensors.torch
    import torch

    real_safe_open, real_load = safetensors.safe_open, torch.load

    def counted_safe_open(filename: Any, *args: Any, **kwargs: Any) -> Any:
        if watch.active:
            watch.read(os.path.abspath(os.fsdecode(filename)), "safetensors")
        return real_safe_open(filename, *args, **kwargs)

    def counted_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        before = getattr(watch.local, "via", None)
        watch.local.via = "torch.load mmap" if kwargs.get("mmap") else "torch.load"
        try:
            return real_load(f, *args, **kwargs)
        finally:
            watch.local.via = before

    real_save, real_save_file = torch.save, safetensors.torch.save_file

    def noted(f: Any) -> None:  # torch.save to a path and safetensors write in C++/Rust: no audit event
        if watch.active and isinstance(f, str | bytes | os.PathLike):
            watch.written.add(os.path.abspath(os.fsdecode(f)))

    def noted_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> Any:
        noted(f)
        return real_save(obj, f, *args, **kwargs)

    def noted_save_file(tensors: Any, filename: Any, *args: Any, **kwargs: Any) -> Any:
        noted(filename)
        return real_save_file(tensors, filename, *args, **kwargs)

    safetensors.safe_open = counted_safe_open
    safetensors.torch.safe_open = counted_safe_open
    safetensors.torch.save_file = noted_save_file
    torch.load, torch.save = counted_load, noted_save


def sample_rss(watch: Watch, stop: threading.Event, root: Path, min_free: int, min_available: int,
               deadline: float, interval: float = 0.05) -> None:
    """The RSS per stage; and the guard of a shared machine: when the disk under ``root`` has less than
    ``min_free`` bytes free or the machine less than ``min_available`` bytes of memory available, or at the
    ``deadline`` (time.monotonic), the run is interrupted (as Ctrl-C does) and what was measured until then is
    printed."""
    import _thread

    import psutil

    proc = psutil.Process()
    checked = 0.0
    while not stop.is_set():
        rss = proc.memory_info().rss
        stage = watch.stage
        if rss > watch.peak.get(stage, 0):
            watch.peak[stage] = rss
        if time.monotonic() - checked > 1.0 and watch.stopped is None:
            checked = time.monotonic()
            free, available = shutil.disk_usage(root).free, psutil.virtual_memory().available
            if free < min_free or available < min_available:
                watch.stopped = (f"interrupted in {stage}: {free / GB:.1f} GB free on disk, {available / GB:.1f} GB "
                                 f"of memory available (limits: --min-free-gb, --min-available-gb)")
                _thread.interrupt_main()
            elif time.monotonic() > deadline:
                watch.stopped = f"interrupted in {stage}: --max-minutes reached"
                _thread.interrupt_main()
            watch.save_progress()
        stop.wait(interval)


# ---------------------------------------------------------------------------------------------------- locations

class Places:
    """The run's locations, and which one a path belongs to (the most specific first)."""

    def __init__(self, root: Path, cfg: Any, source: Path, watch: dict[str, Path]):
        self.root = root.resolve()
        self.run = Path(cfg.run.output_dir).resolve()
        self.ckpts = self.run / cfg.train.output_name
        self.mlflow = (self.run.parent / "mlartifacts").resolve()  # tasks.tracking_store.default_artifact_location
        self.store = Path(cfg.storage.uri).resolve()
        self.cache = Path(cfg.storage.cache_dir).resolve()
        self.source = source.resolve()
        self.watch = {k: v.resolve() for k, v in watch.items()}
        self.registry: list[Path] = []  # model version sources outside every other location (found at the end)
        self.elsewhere: list[Path] = []  # large files written outside the root

    def names(self) -> list[str]:
        return ["store", "cache", "run", "ckpts", "export", "mlflow", "registry", "source", *self.watch, "other",
                "elsewhere"]

    def of(self, path: Path) -> str:
        def under(p: Path, top: Path) -> bool:
            return p == top or top in p.parents

        for name, top in self.watch.items():
            if under(path, top):
                return name
        if under(path, self.ckpts):
            rel = path.relative_to(self.ckpts).parts
            return "export" if len(rel) > 2 and rel[1] == "export" else "ckpts"
        for name, top in (("run", self.run), ("mlflow", self.mlflow), ("store", self.store), ("cache", self.cache),
                          ("source", self.source)):
            if under(path, top):
                return name
        if any(under(path, r) for r in self.registry):
            return "registry"
        if under(path, self.root):
            return "other"
        return "elsewhere"

    def tops(self) -> list[Path]:
        tops = [self.root, *self.watch.values(), *self.registry]
        return [t for t in tops if not any(o != t and o in t.parents for o in tops)]

    def files(self) -> list[tuple[str, Path, os.stat_result | None]]:
        """(location, path, stat) of every file; stat None for a symbolic link."""
        out: list[tuple[str, Path, os.stat_result | None]] = []
        seen: set[Path] = set()
        for top in self.tops():
            for folder, _, names in os.walk(top):
                for name in names:
                    p = Path(folder) / name
                    try:
                        st = p.lstat()
                    except OSError:
                        continue
                    out.append((self.of(p), p, None if os.path.islink(p) else st))
                    seen.add(p)
        for p in self.elsewhere:
            if p not in seen and p.is_file():
                out.append(("elsewhere", p, p.lstat()))
        return out

    def sizes(self) -> dict[str, int]:
        """Bytes per location, each inode once within a location."""
        inodes: dict[str, dict[tuple[int, int], int]] = defaultdict(dict)
        for loc, _, st in self.files():
            if st is not None:
                inodes[loc][(st.st_dev, st.st_ino)] = st.st_size
        return {loc: sum(v.values()) for loc, v in inodes.items()}


def io_chars() -> tuple[int, int]:
    try:
        import psutil

        c = psutil.Process().io_counters()
        return getattr(c, "read_chars", 0), getattr(c, "write_chars", 0)
    except Exception:  # noqa: BLE001 - not every system counts
        return 0, 0


class Phases:
    """The stage transitions: seconds, location growth and I/O per stage."""

    def __init__(self, watch: Watch, places: Places):
        self.watch, self.places = watch, places
        self.seconds: dict[str, float] = defaultdict(float)
        self.growth: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.io: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.order: list[str] = []
        self._mark()

    def _mark(self) -> None:
        self._sizes, self._io, self._t = self.places.sizes(), io_chars(), time.monotonic()

    def switch(self, stage: str) -> None:
        """End the current stage's interval (measure), start ``stage``'s."""
        now, old = time.monotonic(), self.watch.stage
        if old == stage:
            return
        self.seconds[old] += now - self._t
        sizes, io = self.places.sizes(), io_chars()
        for loc in set(sizes) | set(self._sizes):
            self.growth[old][loc] += sizes.get(loc, 0) - self._sizes.get(loc, 0)
        self.io[old][0] += io[0] - self._io[0]
        self.io[old][1] += io[1] - self._io[1]
        if old not in self.order:
            self.order.append(old)
        self.watch.finished.append({"stage": old, "seconds": round(now - self._t, 2),
                                    "peak_rss": self.watch.peak.get(old, 0)})
        self.watch.stage = stage
        self._mark()  # the measuring itself is nobody's time


def wrap_pipeline(phases: Phases) -> None:
    from flows.runtime import PipelineRun

    real_stage, real_call = PipelineRun.stage, PipelineRun.call

    def stage(self: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        phases.switch(task.name)
        try:
            return real_stage(self, task, *args, **kwargs)
        finally:
            phases.switch("flow")

    def call(self: Any, task: Any, *args: Any, **kwargs: Any) -> Any:
        phases.switch(HELPERS.get(task.name, task.name))  # stays: what follows a helper is its stage's work
        return real_call(self, task, *args, **kwargs)

    PipelineRun.stage, PipelineRun.call = stage, call


# ---------------------------------------------------------------------------------------------------- the run

def demo_subset(dest: Path, clips: int, speakers: int) -> Path:
    """``clips`` rows of the demo manifest, from its first ``speakers`` speakers (each speaker's first rows, as
    many from each), and their audio, in a dataset folder of their own.  Several speakers: ingest holds out one
    clip of each, so the evaluation has as many items."""
    rows = [json.loads(line) for line in (DEMO / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line]
    chosen_speakers = list(dict.fromkeys(r["speaker"] for r in rows))[:speakers]
    per = -(-clips // len(chosen_speakers))
    chosen = [r for spk in chosen_speakers for r in [r for r in rows if r["speaker"] == spk][:per]][:clips]
    dest.mkdir(parents=True)
    for row in chosen:
        target = dest / row["audio"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO / row["audio"], target)
    (dest / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen),
                                         encoding="utf-8")
    return dest


def overrides(args: argparse.Namespace, root: Path, source: Path) -> dict[str, Any]:
    import yaml

    o: dict[str, Any] = {
        "run.name": "rehearsal", "run.output_dir": str(root / "runs" / "rehearsal"),
        "storage.uri": str(root / "store"), "storage.cache_dir": str(root / "cache"),
        "tracking.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "download.checkpoint": {"source": args.checkpoint},
        "ingest.source": {"source": str(source)},
        "orchestration.retries": 0,
        "preprocess.device": "cpu", "train.device": "cpu", "evaluate.device": "cpu",
        "train.max_steps": args.steps, "train.epochs": args.steps, "train.batch_tokens": args.batch_tokens,
        "train.val_interval": args.steps, "train.warmup_steps": 0,
        "train.val_audio_samples": 0, "train.val_generate": 0,
        "evaluate.enabled": args.eval_items > 0, "evaluate.max_items": max(args.eval_items, 1),
        "evaluate.paragraph_sentences": 0, "evaluate.emotion_items": 0,
        "evaluate.diffusion_steps": 2, "evaluate.resamples": 50, "generation.num_beams": 1,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        o[key.strip()] = yaml.safe_load(value)
    return o


def rehearse(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    os.environ["PREFECT_HOME"] = str(root / "prefect-home")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["INDEXTTS_CACHE"] = str(root / "cache")
    watch = Watch(large=int(args.large_mb * MB),
                  progress=args.json.with_suffix(".progress.json").resolve() if args.json else None)
    install_hooks(watch)

    from prefect.testing.utilities import prefect_test_harness

    from indextts_core.config import load_config

    source = demo_subset(root / "dataset", args.clips, args.speakers)
    cfg = load_config(overrides=overrides(args, root, source))
    places = Places(root, cfg, source, {k: Path(v) for k, v in (w.split("=", 1) for w in args.watch)})

    from flows.finetune import finetune

    stop = threading.Event()
    summary, error = None, None
    with prefect_test_harness(server_startup_timeout=180):
        phases = Phases(watch, places)
        wrap_pipeline(phases)
        sampler = threading.Thread(target=sample_rss, daemon=True, args=(
            watch, stop, root, int(args.min_free_gb * GB), int(args.min_available_gb * GB),
            time.monotonic() + (args.max_minutes * 60 if args.max_minutes else float("inf"))))
        sampler.start()
        watch.active = True
        started = time.monotonic()
        try:
            summary = finetune(cfg)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - a failed or interrupted run is measured as
            error = f"{type(e).__name__}: {e}"     # far as it got (Ctrl-C, or `timeout -s INT`: the tables so far)
            traceback.clear_frames(e.__traceback__)  # the stopped stage's frames hold its models: free them now
            del e
            gc.collect()
        finally:
            wall = time.monotonic() - started
            watch.active = False
            phases.switch("(end)")
            stop.set()
            sampler.join()
    peak_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    registry = registry_sources(cfg, places)
    places.elsewhere = [Path(p) for p in sorted(watch.written) if places.of(Path(p)) == "elsewhere"
                        and os.path.isfile(p) and os.path.getsize(p) >= watch.large]
    final = places.sizes()
    files = large_files(places, watch)
    if watch.stopped:
        error = f"{watch.stopped} ({error})"
    if error:
        print(f"run stopped: {error}", file=sys.stderr)
    if summary is None and (cfg.run.output_dir / "summary.json").is_file():  # a failed run's summary: its stages
        from flows.runtime import RunSummary

        summary = RunSummary.model_validate_json((cfg.run.output_dir / "summary.json").read_text())
    rows = {r.stage: r for r in summary.stages} if summary is not None else {}
    results = summary.results if summary is not None else {}
    done = {"train steps": results.get("train", {}).get("metrics", {}).get("steps"),
            "evaluated items": results.get("evaluate", {}).get("metrics", {}).get("items"),
            "evaluated models": ", ".join(results.get("evaluate", {}).get("data", {}).get("models", []))}
    stages = []
    for name in sorted(phases.order, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else len(STAGE_ORDER)):
        row = rows.get(name)
        stages.append({
            "stage": name, "status": row.status if row else ("-" if name == "flow" else "?"),
            "seconds": round(phases.seconds[name], 2), "summary_seconds": round(row.seconds, 2) if row else None,
            "peak_rss": watch.peak.get(name, 0), "growth": dict(phases.growth[name]),
            "read_chars": phases.io[name][0], "write_chars": phases.io[name][1]})
    return {
        "checkpoint": args.checkpoint, "clips": args.clips, "steps": args.steps, "eval_items": args.eval_items,
        "large_mb": args.large_mb, "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs", "status":
        f"failed: {error}" if error else summary.status if summary is not None else "?", "wall_seconds": round(wall, 2),
        "done": done, "root": str(root), "peak_rss_run": peak_run, "stages": stages, "final": final,
        "registry": registry, "files": files,
        "physical_total": physical_total(places)}


def registry_sources(cfg: Any, places: Places) -> list[dict[str, str]]:
    """Every registered model version: its source and the location that holds it."""
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    out = []
    try:
        client = MlflowClient(cfg.tracking.tracking_uri)
        versions = client.search_model_versions()
    except Exception as e:  # noqa: BLE001 - no registry, nothing to say
        return [{"error": str(e)}]
    for mv in versions:
        src = mv.source or ""
        path = Path(unquote(urlparse(src).path)) if src.startswith("file:") else Path(src) if "://" not in src else None
        where = places.of(path.resolve()) if path is not None else "remote"
        if path is not None and where in ("other", "elsewhere") and path.is_dir():
            places.registry.append(path.resolve())
            where = "registry"
        out.append({"model": mv.name, "version": str(mv.version), "source": src, "location": where})
    return out


def physical_total(places: Places) -> int:
    inodes = {(st.st_dev, st.st_ino): st.st_size for _, _, st in places.files() if st is not None}
    return sum(inodes.values())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 * MB), b""):
            h.update(block)
    return h.hexdigest()


def label_of(places: Places, paths: list[tuple[str, str]]) -> str:
    """A name for a content that stays the same from run to run: the folder of its first copy within its location
    (digests elided) and its file names (``train/…/{best,latest}.pth``)."""
    tops = {"store": places.store, "cache": places.cache, "run": places.run, "ckpts": places.ckpts,
            "export": places.ckpts, "mlflow": places.mlflow, "source": places.source, "other": places.root,
            **places.watch}
    loc, first = paths[0]
    try:
        parts = Path(first).parent.relative_to(tops[loc]).parts
    except (KeyError, ValueError):
        parts = Path(first).parent.parts[-2:]
    folder = "/".join("…" if len(p) >= 12 and all(c in "0123456789abcdef" for c in p) else p for p in parts)
    names = sorted({Path(p).name for _, p in paths})
    if len(names) == 1:
        shown = names[0]
    else:
        stems, suffixes = {Path(n).stem for n in names}, {Path(n).suffix for n in names}
        shown = ("{" + ",".join(sorted(stems)) + "}" + suffixes.pop() if len(suffixes) == 1
                 else "{" + ",".join(names) + "}")
    return f"{folder}/{shown}" if folder else shown


def large_files(places: Places, watch: Watch) -> list[dict[str, Any]]:
    """Every content of at least ``watch.large`` bytes: copies, where they live, reads during the run.  Files are
    hashed only when another file has the same size (a size of its own is a content of its own)."""
    order = {name: i for i, name in enumerate(places.names())}
    found = [(loc, path, st) for loc, path, st in places.files() if st is not None and st.st_size >= watch.large]
    found.sort(key=lambda f: (order.get(f[0], len(order)), str(f[1])))
    sizes = Counter({(st.st_dev, st.st_ino): st.st_size for _, _, st in found}.values())
    by_inode: dict[tuple[int, int], str] = {}
    by_content: dict[str, dict[str, Any]] = {}
    for loc, path, st in found:
        key = (st.st_dev, st.st_ino)
        if key not in by_inode:
            by_inode[key] = sha256(path) if sizes[st.st_size] > 1 else f"size:{st.st_size}"
        digest = by_inode[key]
        entry = by_content.setdefault(digest, {"sha256": None if digest.startswith("size:") else digest,
                                               "size": st.st_size, "paths": [], "inodes": set(), "mtimes": {},
                                               "reads": Counter(), "via": Counter(), "placed": set()})
        entry["paths"].append((loc, str(path)))
        entry["placed"].add((loc, key))
        entry["inodes"].add(key)
        entry["mtimes"][key] = st.st_mtime_ns
    gone: dict[str, dict[str, Any]] = {}
    for r in watch.reads:
        key = (r.dev, r.ino)
        entry = by_content.get(by_inode.get(key, ""))
        if entry is not None and entry["mtimes"].get(key) == r.mtime_ns and entry["size"] == r.size:
            entry["reads"][r.stage] += 1
            entry["via"][r.via] += 1
            continue
        try:
            now = os.stat(r.path)
            if (now.st_ino, now.st_mtime_ns, now.st_size) == (r.ino, r.mtime_ns, r.size):
                continue  # outside every location and unchanged: the library's own files (fonts, tables, code)
        except OSError:
            pass
        name = Path(r.path).name
        g = gone.setdefault(f"{name}:{r.size}", {"size": r.size, "paths": [], "reads": Counter(), "via": Counter(),
                                                 "name": name})
        g["reads"][r.stage] += 1
        g["via"][r.via] += 1
        if (places.of(Path(r.path)), r.path) not in g["paths"]:
            g["paths"].append((places.of(Path(r.path)), r.path))
    out = []
    for entry in sorted(by_content.values(), key=lambda e: -e["size"]):
        out.append({"name": label_of(places, entry["paths"]), "sha256": entry["sha256"], "size": entry["size"],
                    "copies": len(entry["inodes"]), "paths": len(entry["paths"]),
                    "locations": dict(Counter(loc for loc, _ in entry["paths"])),
                    "location_copies": {loc: len({i for i_loc, i in entry["placed"] if i_loc == loc})
                                        for loc, _ in entry["paths"]},
                    "where": [f"{loc}: {p}" for loc, p in entry["paths"]], "reads": sum(entry["reads"].values()),
                    "reads_by_stage": dict(entry["reads"]), "reads_via": dict(entry["via"])})
    for g in sorted(gone.values(), key=lambda e: -e["size"]):
        out.append({"name": f"{g['name']} (gone or replaced)", "sha256": None, "size": g["size"], "copies": 0,
                    "paths": 0, "locations": dict(Counter(loc for loc, _ in g["paths"])),
                    "where": [f"{loc}: {p}" for loc, p in g["paths"]], "reads": sum(g["reads"].values()),
                    "reads_by_stage": dict(g["reads"]), "reads_via": dict(g["via"])})
    return out


# ---------------------------------------------------------------------------------------------------- the tables

def fmt_gb(n: int | float | None) -> str:
    if n is None:
        return "-"
    return "0" if n == 0 else f"{n / GB:.3f}"


def table(cols: list[str], rows: list[list[str]]) -> str:
    align = "|".join("---" if i == 0 else "---:" for i in range(len(cols)))
    lines = ["| " + " | ".join(cols) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def locations_used(result: dict[str, Any]) -> list[str]:
    order = ["store", "cache", "run", "ckpts", "export", "mlflow", "registry", "source", "other", "elsewhere"]
    used = {loc for s in result["stages"] for loc, v in s["growth"].items() if v} | {
        loc for loc, v in result["final"].items() if v}
    return [loc for loc in order if loc in used] + sorted(used - set(order))


def print_result(result: dict[str, Any]) -> None:
    print(f"\nfinetune flow, base {result['checkpoint']} (RANDOM weights: costs only, no quality), {result['clips']} "
          f"clips, {result['steps']} steps, evaluate.max_items {result['eval_items']}, CPU; {result['machine']}; "
          f"{result['date']}")
    print("; ".join(f"{k}: {v}" for k, v in result.get("done", {}).items()))
    print(f"status: {result['status']}; wall {result['wall_seconds']:.1f} s; peak RSS of the run (ru_maxrss) "
          f"{fmt_gb(result['peak_rss_run'])} GB; all locations, each inode once: "
          f"{fmt_gb(result['physical_total'])} GB\n")
    locs = locations_used(result)
    cols = ["stage", "status", "s", "summary s", "peak RSS GB", *[f"{loc} GB" for loc in locs], "written GB",
            "read GB"]
    rows = []
    for s in result["stages"]:
        summary_s = "-" if s["summary_seconds"] is None else f"{s['summary_seconds']:.1f}"
        rows.append([s["stage"], s["status"], f"{s['seconds']:.1f}", summary_s, fmt_gb(s["peak_rss"]),
                     *[fmt_gb(s["growth"].get(loc, 0)) for loc in locs], fmt_gb(s["write_chars"]),
                     fmt_gb(s["read_chars"])])
    rows.append(["at the end", "", f"{result['wall_seconds']:.1f}", "", fmt_gb(result["peak_rss_run"]),
                 *[fmt_gb(result["final"].get(loc, 0)) for loc in locs], "", ""])
    print("Per stage (location columns: growth during the stage; last row: each location's size at the end)")
    print(table(cols, rows))
    large = result["files"]
    print(f"\nFiles of at least {result['large_mb']:g} MB: copies = distinct inodes with the content (per location: "
          "copies there, and paths when more); reads = opens for reading during the run")
    rows = []
    for f in large:
        copies = f.get("location_copies", {})
        locations = ", ".join(k + ("" if v == 1 and copies.get(k, 1) == 1 else f" {copies.get(k, v)}") +
                              ("" if copies.get(k, v) == v else f" ({v} paths)") for k, v in f["locations"].items())
        by_stage = ", ".join(f"{k} {v}" for k, v in f["reads_by_stage"].items()) or "-"
        via = ", ".join(f"{k} {v}" for k, v in f["reads_via"].items()) or "-"
        rows.append([f["name"], f"{f['size'] / MB:.1f}", str(f["copies"]), locations, str(f["reads"]), by_stage, via])
    print(table(["file", "MB", "copies", "locations", "reads", "reads by stage", "read by"], rows))
    root = result.get("root", "")
    print(f"\nWhere the copies are (under {root}):")
    for f in large:
        if f["paths"] > 1:
            print(f"- {f['name']}: " + "; ".join(w.replace(root + "/", "") for w in f["where"]))
    for r in result["registry"]:
        if "error" in r:
            print(f"\nregistry: {r['error']}")
        else:
            print(f"\nregistry: {r['model']} v{r['version']} -> {r['source']} ({r['location']})")


def ratio(a: float | None, b: float | None) -> str:
    if not a or b is None:
        return "-"
    return f"{b / a:.2f}"


def print_compare(before: dict[str, Any], after: dict[str, Any]) -> None:
    print(f"\nBefore ({before['date']}, {before['checkpoint']}) against now ({after['date']}, {after['checkpoint']}): "
          "before / now (now / before)")
    old = {s["stage"]: s for s in before["stages"]}
    locs = [loc for loc in dict.fromkeys(locations_used(before) + locations_used(after))]
    rows = []
    for s in after["stages"]:
        b = old.get(s["stage"], {})
        rows.append([s["stage"],
                     f"{b.get('seconds', 0):.1f} / {s['seconds']:.1f} ({ratio(b.get('seconds'), s['seconds'])})",
                     f"{fmt_gb(b.get('peak_rss'))} / {fmt_gb(s['peak_rss'])} "
                     f"({ratio(b.get('peak_rss'), s['peak_rss'])})",
                     f"{fmt_gb(b.get('write_chars'))} / {fmt_gb(s['write_chars'])}",
                     f"{fmt_gb(b.get('read_chars'))} / {fmt_gb(s['read_chars'])}"])
    rows.append(["run", f"{before['wall_seconds']:.1f} / {after['wall_seconds']:.1f} "
                 f"({ratio(before['wall_seconds'], after['wall_seconds'])})",
                 f"{fmt_gb(before['peak_rss_run'])} / {fmt_gb(after['peak_rss_run'])} "
                 f"({ratio(before['peak_rss_run'], after['peak_rss_run'])})", "", ""])
    print(table(["stage", "s", "peak RSS GB", "written GB", "read GB"], rows))
    rows = [[loc, fmt_gb(before["final"].get(loc, 0)), fmt_gb(after["final"].get(loc, 0)),
             ratio(before["final"].get(loc, 0), after["final"].get(loc, 0))] for loc in locs]
    rows.append(["all, each inode once", fmt_gb(before["physical_total"]), fmt_gb(after["physical_total"]),
                 ratio(before["physical_total"], after["physical_total"])])
    print("\nEach location's size at the end")
    print(table(["location", "before GB", "now GB", "now / before"], rows))

    def keyed(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for f in result["files"]:
            key = f"{f['name']} ({f['size'] / MB:.1f} MB)"
            n = 2
            while key in out:
                key, n = f"{f['name']} ({f['size'] / MB:.1f} MB) #{n}", n + 1
            out[key] = f
        return out

    bf, af = keyed(before), keyed(after)
    rows = []
    for key in dict.fromkeys([*bf, *af]):
        b, a = bf.get(key), af.get(key)
        rows.append([key, "-" if b is None else str(b["copies"]), "-" if a is None else str(a["copies"]),
                     "-" if b is None else str(b["reads"]), "-" if a is None else str(a["reads"])])
    print("\nLarge files (matched by name and size)")
    print(table(["file", "copies before", "copies now", "reads before", "reads now"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="tiny://0", help="download.checkpoint: tiny://<seed> (tiny), "
                    "random://<seed> (the released shapes, random weights), or any source the config accepts")
    ap.add_argument("--clips", type=int, default=8, help="clips of the demo dataset")
    ap.add_argument("--speakers", type=int, default=2, help="from this many speakers (one held-out clip each)")
    ap.add_argument("--steps", type=int, default=2, help="train.max_steps (validation at the last)")
    ap.add_argument("--batch-tokens", type=int, default=512, help="train.batch_tokens (small: the steps happen)")
    ap.add_argument("--eval-items", type=int, default=2, help="evaluate.max_items (per language and group; 0: no "
                    "evaluation)")
    ap.add_argument("--large-mb", type=float, default=100.0, help="files at least this size are followed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another config override")
    ap.add_argument("--watch", action="append", default=[], metavar="NAME=PATH", help="another location to measure")
    ap.add_argument("--min-free-gb", type=float, default=8.0, help="interrupt the run when the disk has less free")
    ap.add_argument("--min-available-gb", type=float, default=1.5, help="interrupt the run when the machine has "
                    "less memory available")
    ap.add_argument("--max-minutes", type=float, help="interrupt the flow after this long (the tables so far)")
    ap.add_argument("--keep", type=Path, help="run under this folder (kept) instead of a temporary one")
    ap.add_argument("--json", type=Path, help="save the numbers here (and, while the run goes, each stage's seconds "
                    "and peak RSS in <name>.progress.json: all that is left when the kernel kills the run)")
    ap.add_argument("--compare", type=Path, help="a saved --json run, printed next to this one")
    args = ap.parse_args()
    before = json.loads(args.compare.read_text()) if args.compare else None
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=False)
        result = rehearse(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
            result = rehearse(args, Path(tmp).resolve())
    print_result(result)
    if before is not None:
        print_compare(before, result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"\nsaved: {args.json}")


if __name__ == "__main__":
    main()

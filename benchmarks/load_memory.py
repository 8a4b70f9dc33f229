"""Peak memory of loading the GPT, exporting it and one AdamW step: the old way against the new one, same run.

    uv run python benchmarks/load_memory.py                 # mid-size GPT (about 0.5 GB of fp32 weights)
    uv run python benchmarks/load_memory.py --dim 384       # smaller

A random GPT of the released layout (24 layers, the released vocabularies) but narrower (``--dim``,
default 512; conditioning encoders at ``--cond``, default 256) is saved as ``gpt.pth`` in a
temporary folder.  Each measurement then runs in a fresh process, which notes its resident memory,
resets the kernel's peak (``VmHWM``), does one thing and reports the peak's growth over the noted
resident memory, divided by the bytes of the tensors concerned:

* **load**: ``old`` builds the model (random init) and copies the file's state dict into it (the
  code ``load_gpt`` ran before); ``new`` is ``load_gpt`` (built on the meta device, the loaded
  tensors assigned); ``mmap`` is ``load_gpt(mmap=True)``.  Each then reads every tensor once (a
  sum), so the pages of a mapped file count as well.  Ratio: over the weights' bytes.
* **export fp32 / fp16**: from a loaded model, ``old`` is the former export (every tensor cloned
  into a new state dict, then saved); ``new`` is ``export_checkpoint``.  Ratio: over the weights.
* **AdamW step 1 / step 2**: gradients set, then one step (step 1 also allocates the two moments,
  twice the weights) and a second step (temporaries only).  ``old`` is torch's default on the CPU
  (what ``build_optimizer`` built there before), ``new`` is ``build_optimizer(..., cpu)``.  Ratio:
  over the trained weights' bytes.  The two must end with the same weights (fp32 tolerance: checked).

Not a test: it measures and prints (figures depend on the machine; the ratios hardly do).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from indextts_core.model.checkpoint import (  # noqa: E402
    export_checkpoint,
    load_gpt,
    load_state_dict_into,
    official_state_dict,
    read_config,
    read_state_dict,
)
from indextts_core.model.config import GPTConfig, vocab_size_from_rows  # noqa: E402
from indextts_core.model.unified_voice import UnifiedVoice  # noqa: E402
from indextts_core.training.optim import build_optimizer, param_groups  # noqa: E402

RELEASED = REPO / "tests" / "fixtures" / "indextts2_gpt_full_shapes.json"


def _kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset the peak resident memory to the current one; returns the current one (KiB)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _kib("VmRSS")


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _warm_up() -> None:
    """Run each code path once on the tiny released GPT, so that the measured peaks leave out what the first
    call of a kernel or library loads (its code and buffers), which does not grow with the model."""
    tiny = REPO / "tests" / "fixtures" / "indextts2_gpt_tiny"
    for model in (old_load(tiny), load_gpt(tiny), load_gpt(tiny, mmap=True)):
        _touch(model)
        torch.save(official_state_dict(model), io.BytesIO())
        groups = param_groups(model, lr=1e-4, weight_decay=0.01, new_rows_lr=1e-3, new_rows_weight_decay=0.0)
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        for opt in (torch.optim.AdamW(groups), build_optimizer(groups, torch.device("cpu"))):
            opt.step()


def _touch(model: torch.nn.Module) -> None:
    """Read every parameter and buffer once (pages of a mapped file become resident)."""
    with torch.no_grad():
        for t in (*model.parameters(), *model.buffers()):
            t.sum()


def make_checkpoint(root: Path, dim: int, cond: int) -> None:
    """A random GPT of the released layout, ``dim`` wide, saved with its config.yaml."""
    gpt = json.loads(RELEASED.read_text())["gpt_config"]
    gpt |= {"model_dim": dim, "heads": dim // 64}
    for section in ("condition_module", "emo_condition_module"):
        gpt[section] = gpt[section] | {"output_size": cond, "linear_units": 4 * cond}
    torch.manual_seed(0)
    model = UnifiedVoice(GPTConfig.from_dict(gpt))
    torch.save(official_state_dict(model), root / "gpt.pth")
    (root / "config.yaml").write_text(yaml.safe_dump({"gpt": gpt, "gpt_checkpoint": "gpt.pth",
                                                      "dataset": {"bpe_model": "bpe.model"}}, sort_keys=False))
    (root / "bpe.model").write_bytes(b"not read by the export")


def old_load(root: Path) -> UnifiedVoice:
    """What ``load_gpt`` did before: the model built with its random init, then the state dict copied in."""
    data = read_config(root / "config.yaml")
    model = UnifiedVoice(GPTConfig.from_dict(data["gpt"], version=data.get("version")))
    load_state_dict_into(model, read_state_dict(root / "gpt.pth"), root / "gpt.pth")
    return model.eval()


def old_export(model: UnifiedVoice, out: Path, dtype: torch.dtype) -> None:
    """What ``export_checkpoint`` did before when writing ``gpt.pth``: every tensor cloned, then saved."""
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous().clone()
          for k, v in official_state_dict(model).items()}
    torch.save(sd, out / "gpt.pth")


def measure_load(root: Path, way: str) -> dict:
    start = _reset_peak()
    t0 = time.perf_counter()
    model = old_load(root) if way == "old" else load_gpt(root, mmap=way == "mmap")
    _touch(model)
    seconds = time.perf_counter() - t0
    size = _nbytes(official_state_dict(model).values())
    return {"seconds": seconds, "peak_growth": (_kib("VmHWM") - start) * 1024, "tensor_bytes": size}


def measure_export(root: Path, way: str, dtype: str) -> dict:
    model = load_gpt(root)
    _touch(model)
    size = _nbytes(official_state_dict(model).values())
    out = root / f"export-{way}-{dtype}"
    start = _reset_peak()
    t0 = time.perf_counter()
    if way == "old":
        old_export(model, out, getattr(torch, dtype))
    else:
        rows = model.text_embedding.weight.shape[0]
        export_checkpoint(model, out, root, root / "bpe.model", vocab_size_from_rows(rows), dtype)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return {"seconds": seconds, "peak_growth": (_kib("VmHWM") - start) * 1024, "tensor_bytes": size}


def measure_optimizer(root: Path, way: str) -> dict:
    model = load_gpt(root).train()
    groups = param_groups(model, lr=1e-4, weight_decay=0.01, new_rows_lr=1e-3, new_rows_weight_decay=0.0)
    params = [p for g in groups for p in g["params"]]
    gen = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt = torch.optim.AdamW(groups) if way == "old" else build_optimizer(groups, torch.device("cpu"))
    out = {"tensor_bytes": _nbytes(params)}
    for step in (1, 2):
        start = _reset_peak()
        t0 = time.perf_counter()
        opt.step()
        out[f"step{step}_seconds"] = time.perf_counter() - t0
        out[f"step{step}_peak_growth"] = (_kib("VmHWM") - start) * 1024
    torch.save([p.detach() for p in params], root / f"optim-{way}.pt")  # compared by the parent
    return out


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    _warm_up()
    kind, way = args.child.split(":", 1)
    if kind == "load":
        result = measure_load(root, way)
    elif kind == "optim":
        result = measure_optimizer(root, way)
    else:
        way, dtype = way.split(":")
        result = measure_export(root, way, dtype)
    print(json.dumps(result))


def _run(root: Path, what: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--root", str(root), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _row(name: str, old: dict, new: dict, key: str = "") -> str:
    growth, seconds = f"{key}peak_growth", f"{key}seconds"
    size = old["tensor_bytes"]
    cells = [f"{d[growth] / 2**20:.0f} MiB ({d[growth] / size:.2f}x)" for d in (old, new)]
    cells += [f"{d[seconds]:.2f} s" for d in (old, new)]
    return f"| {name} | " + " | ".join(cells) + " |"


def _optimizer_difference(root: Path) -> str:
    """How far apart the two optimizers' weights ended (read from the children's files, tensor by tensor)."""
    old, new = (torch.load(root / f"optim-{way}.pt", weights_only=True, mmap=True) for way in ("old", "new"))
    worst = max(float(((a - b).abs() / (b.abs() + 1e-6)).max()) for a, b in zip(old, new, strict=True))
    close = all(torch.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(old, new, strict=True))
    return f"{'allclose' if close else 'NOT allclose'} (rtol 1e-6, atol 1e-7); largest relative difference {worst:.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=512, help="model width (a multiple of 64)")
    ap.add_argument("--cond", type=int, default=256, help="width of the conditioning encoders")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory(prefix="load-memory-") as tmp:
        root = Path(tmp)
        make_checkpoint(root, args.dim, args.cond)
        size = (root / "gpt.pth").stat().st_size
        print(f"gpt.pth: {size / 2**20:.0f} MiB (model_dim {args.dim}, 24 layers, conditioning {args.cond}); "
              f"peak = growth of peak RSS over the RSS before, ratio = over the tensors' bytes")
        print("| what | old peak | new peak | old time | new time |")
        print("|---|---|---|---|---|")
        loads = {way: _run(root, f"load:{way}", args.threads) for way in ("old", "new", "mmap")}
        print(_row("load_gpt + read every tensor", loads["old"], loads["new"]))
        print(_row("load_gpt(mmap=True) + read every tensor", loads["old"], loads["mmap"]))
        for dtype in ("float32", "float16"):
            old, new = (_run(root, f"export:{way}:{dtype}", args.threads) for way in ("old", "new"))
            print(_row(f"export gpt.pth {dtype}", old, new))
        old, new = (_run(root, f"optim:{way}", args.threads) for way in ("old", "new"))
        print(_row("AdamW step 1 (moments allocated)", old, new, "step1_"))
        print(_row("AdamW step 2", old, new, "step2_"))
        print(f"AdamW old vs new after two steps: {_optimizer_difference(root)}")


if __name__ == "__main__":
    main()

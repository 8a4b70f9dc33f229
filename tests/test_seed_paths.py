"""What a user of the seed guide types: its four scripts, ``--resume FILE``, and where the checkpoints are."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests_support import REPO, cli

#: The seed's scripts, the command each one is, and the flags the guide's lines give it.
SHIMS = {
    "tools/tokenizer/extend_bpe.py": ("extend-bpe", ("--base-model", "--manifests", "--output-model", "--target-size")),
    "tools/preprocess_data.py": ("preprocess", ("--manifest", "--output-dir", "--tokenizer", "--language")),
    "tools/build_gpt_prompt_pairs.py": ("build-pairs", ("--manifest", "--output", "--pairs-per-target")),
    "trainers/train_gpt_v2.py": ("train", ("--train-manifest", "--val-manifest", "--tokenizer", "--epochs",
                                           "--resume")),
}


def _python(*args: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as a user runs it (the project's interpreter), its logs kept out of the home folder."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "COLUMNS": "200", "NO_COLOR": "1",
           "XDG_STATE_HOME": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", list(SHIMS))
def test_each_seed_script_is_its_command(script: str, tmp_path: Path):
    """``python tools/...py --help`` from the repository root is the command's own help, with the guide's flags."""
    command, flags = SHIMS[script]
    proc = _python(script, "--help", cwd=REPO, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Usage: indextts-train {command} [OPTIONS]" in proc.stdout
    for flag in flags:
        assert re.search(rf"{flag}\b", proc.stdout), flag


def test_the_guides_extend_bpe_line_reaches_the_command(tmp_path: Path):
    """The guide's step 1, word for word, in a folder without its files: the command's one-line error."""
    line = ("tools/tokenizer/extend_bpe.py --base-model checkpoints/bpe.model --manifests dataset/manifest.jsonl "
            "--output-model tokenizers/extended_bpe.model --target-size 24000").split()
    proc = _python(str(REPO / line[0]), *line[1:], cwd=tmp_path, tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "manifest.jsonl" in errors[0] and "not found" in errors[0], proc.stderr
    assert "can't open file" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tokenizers").exists()


def test_a_missing_resume_file_stops_train_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """--resume FILE that is not there: one error line naming it, exit 2, nothing trained."""
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["train", "--resume", "trained_ckpts/model_step6.pth"])
    assert result.exit_code == 2, result.output
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: --resume trained_ckpts/model_step6.pth: no such checkpoint file")
    assert "Traceback" not in result.output and not list(tmp_path.rglob("trained_ckpts"))


def test_the_run_summary_says_where_the_checkpoints_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from flows.printing import print_summary

    folder = tmp_path / "runs" / "t" / "trained_ckpts" / "0123456789abcdef"
    (folder / "export").mkdir(parents=True)
    for name in ("latest.pth", "best.pth", "model_step10.pth", "model_step8.pth"):
        (folder / name).write_bytes(b"")
    trained = {"metrics": {"steps": 10}, "outputs": {"checkpoints": str(folder)}}
    summary = SimpleNamespace(results={"train": trained}, run_name="t", status="completed", stages=[],
                              output_dir=str(tmp_path / "runs" / "t"), store="store", mlflow_link=None)
    print_summary(summary)
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("checkpoints: ")]
    assert line == (f"checkpoints: {folder}/ holds latest.pth, best.pth, model_step8.pth, model_step10.pth, export/ "
                    "(the exported model, official layout)")


CONFIG = """\
run: {name: r, output_dir: runs/r}
storage: {uri: store}
tracking: {tracking_uri: "sqlite:///mlflow.db"}
evaluate: {enabled: false}
train: {epochs: 1, batch_tokens: 1024, learning_rate: 1.0e-3, warmup_steps: 1, max_steps: 4, val_interval: 2,
        val_generate: 0, val_audio_samples: 0}
"""


@pytest.mark.slow
def test_resume_file_of_a_cached_training_trains_from_it(tmp_path: Path, prefect_env: dict[str, str]):
    """``train`` prints where its checkpoints are; ``--resume`` one of them trains from it although the training
    is cached (the setting is not in the cache key), and arrives at the same export (an exact resume)."""
    (tmp_path / "run.yaml").write_text(CONFIG, encoding="utf-8")
    first = cli("train", "--config", "run.yaml", cwd=tmp_path, env=prefect_env)
    (line,) = [x for x in first.stdout.splitlines() if x.startswith("checkpoints: ")]
    folder = line.removeprefix("checkpoints: ").split("/ holds ")[0]
    assert (tmp_path / folder / "latest.pth").is_file() and (tmp_path / folder / "export" / "gpt.pth").is_file()
    assert re.fullmatch(r"runs/r/trained_ckpts/[0-9a-f]{16}", folder), folder
    assert "holds latest.pth, best.pth, model_step2.pth, model_step4.pth, export/" in line
    exported = (tmp_path / folder / "export" / "gpt.pth").read_bytes()

    again = cli("train", "--config", "run.yaml", "--resume", f"{folder}/model_step2.pth", cwd=tmp_path,
                env=prefect_env)
    assert "pairs: cached" in again.stderr and "train: ran" in again.stderr  # trained, not the cached result
    said = " ".join(again.stderr.split())
    assert f"resuming from {folder}/model_step2.pth: step 2" in said
    assert "steps: 4;" in again.stdout and (tmp_path / folder / "export" / "gpt.pth").read_bytes() == exported

"""A failure is one line on the console and a full log in a file whose path is printed; library warnings go to
that file, not the console (:mod:`flows.cli_logging`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests_support import cli


def _log_named(stderr: str, cwd: Path) -> Path:
    (line,) = [x for x in stderr.splitlines() if x.startswith("full log: ")]
    path = Path(line.removeprefix("full log: ").strip())
    return path if path.is_absolute() else cwd / path


def test_a_failed_stage_is_one_error_line_and_the_log_has_the_traceback(tmp_path: Path,
                                                                         prefect_env: dict[str, str]):
    """A checkpoint folder without gpt.pth: the download stage fails inside its flow run.  Prefect logs the
    task's failure, then the flow's, each with its traceback; the console shows the command's one
    ``error:`` line and where the full log is (and the temporary server's and the flow run's INFO lines)."""
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "config.yaml").write_text("gpt: {}\n", encoding="utf-8")
    proc = cli("train", "--checkpoint", str(folder), cwd=tmp_path, check=False,
               env={**prefect_env, "XDG_STATE_HOME": str(tmp_path / "state")})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr and len(lines) <= 10, proc.stderr
    assert not any("ERROR" in x for x in lines) and sum(x.startswith("error: ") for x in lines) == 1, proc.stderr
    assert f"error: checkpoint: file 'gpt.pth' not found in {folder}" in proc.stderr
    log = _log_named(proc.stderr, tmp_path)
    assert log.parent == tmp_path / "runs" / "demo" / "logs" and log.name.startswith("train-")  # next to the run
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and "DownloadError" in text
    assert "Encountered exception during execution" in text  # Prefect's lines, all of them, are here
    assert not list((tmp_path / "state").rglob("*.log"))  # moved, not copied


def test_an_unexpected_exception_is_one_line_with_its_type_exit_1(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """Not an input error, a bug: ``error: RuntimeError: ...``, exit code 1, the traceback in the log file;
    ``--verbose`` shows it on the console too."""
    from flows.cli import app
    from flows.commands import model

    def broken(cfg: object) -> Path:
        raise RuntimeError("the disk sang")

    monkeypatch.setattr(model, "trained_model", broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["evaluate"])
    assert result.exit_code == 1, result.output
    assert "error: RuntimeError: the disk sang" in result.stderr
    assert "Traceback" not in result.output
    log = _log_named(result.stderr, tmp_path)
    assert log.parent == tmp_path / "runs" / "demo" / "logs"
    text = log.read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in text and 'raise RuntimeError("the disk sang")' in text

    verbose = CliRunner().invoke(app, ["--verbose", "evaluate"])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert "error: RuntimeError: the disk sang" in verbose.stderr


def test_library_warnings_go_to_the_log_not_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A deprecation raised in a library's code is in the log file only; ``config``, which only prints, keeps
    its log in the per-user folder (no run folder appears); a command that works prints no log path."""
    from flows.cli import app
    from flows.commands import ops

    def noisy(cfg: object) -> str:
        warnings.warn_explicit("torch.foo is deprecated, use torch.bar", FutureWarning,
                               "/venv/site-packages/torch/foo.py", 7)
        return "run: {}\n"

    monkeypatch.setattr(ops, "dump_config", noisy)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert "deprecated" not in result.stderr and "full log" not in result.stderr
    assert not (tmp_path / "runs").exists()
    (log,) = (tmp_path / "state" / "indextts-train" / "logs").glob("config-*.log")
    assert "FutureWarning: torch.foo is deprecated, use torch.bar" in log.read_text(encoding="utf-8")

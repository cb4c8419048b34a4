"""The `modalrec` command line and the DVC scripts: one command per stage for every family, one path, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from modalrec import cli

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "encode", "compress", "distill", "train", "evaluate", "metrics", "report")


def test_help_lists_a_command_for_every_stage_and_names_every_family():
    res = CliRunner().invoke(cli.app, ["--help"])
    assert res.exit_code == 0
    for name in (*STAGES, "recommend"):
        assert f" {name} " in res.output, name
    train_help = CliRunner().invoke(cli.app, ["train", "--help"]).output
    for family in ("baselines", "KDSR", "ODMT"):
        assert family in train_help
    for cmd in ("train", "evaluate", "prepare", "encode", "compress", "distill", "metrics"):
        assert "--dataset" in CliRunner().invoke(cli.app, [cmd, "--help"]).output, cmd


def test_every_pipeline_script_is_its_cli_command():
    """pipeline/<stage>.py hands its arguments to `modalrec <stage>`, so DVC and the CLI cannot drift apart."""
    scripts = sorted(p.stem for p in (ROOT / "pipeline").glob("*.py"))
    assert scripts == sorted(STAGES)
    for name in scripts:
        text = (ROOT / "pipeline" / f"{name}.py").read_text()
        assert f'main(["{name}", *sys.argv[1:]]' in text, name


def _bad_params(tmp_path: Path, edit) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(p)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_badly_typed_parameter_is_one_line_naming_the_key(tmp_path):
    path = _bad_params(tmp_path, lambda p: p["train"].update(epochs="ten"))
    for argv in ([str(ROOT / "pipeline" / "train.py"), "sasrec", "--params", str(path)],
                 ["-m", "modalrec.cli", "train", "kdsr_sasrec", "--params", str(path)]):
        res = _run(*argv, cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip() == "error: parameter train.epochs: must be an integer, got 'ten'"
        assert not (tmp_path / "models").exists()


def test_a_binary_user_sequence_file_is_one_line_naming_the_file(tmp_path):
    raw = tmp_path / "user_sequence.txt"
    raw.write_bytes(b"u1 a b c\n" + bytes(range(128, 256)) * 4 + b"\n")

    def edit(p):
        p["base"]["dataset"] = "bin"
        p["datasets"]["bin"] = {"format": "user_sequence", "path": str(raw)}

    res = _run(str(ROOT / "pipeline" / "prepare.py"), "--params", str(_bad_params(tmp_path, edit)), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(raw) in lines[0], res.stderr
    assert not (tmp_path / "data" / "prepared" / "bin").exists()

"""The prepare stage under DVC in a throw-away project using the real dvc.yaml prepare stage: a second repro does
nothing, editing another dataset's entry does nothing, editing the current one reruns; and the pipeline script turns
bad input into a one-line error with exit code 2 and no output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT / "src")}


def _seq_file(d: Path) -> Path:
    lines = [f"u{u} " + " ".join(f"i{(u * 7 + k * 3) % 20}" for k in range(6 + u % 4)) for u in range(40)]
    f = d / "user_sequence.txt"
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.mark.parametrize("command", [[str(ROOT / "pipeline" / "prepare.py")], ["-m", "modalrec.cli", "prepare"]],
                         ids=["pipeline-script", "modalrec-cli"])
def test_pipeline_script_bad_input(tmp_path, command):
    """The DVC stage's script and `modalrec prepare` are one path (the script hands its arguments to the CLI)."""
    bad = tmp_path / "user_sequence.txt"
    bad.write_text("u1 a b\nlonely\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"base": {"dataset": "toy"}, "datasets": {"toy": {"format": "user_sequence", "path": str(bad)}}}))
    r = subprocess.run([sys.executable, *command], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "user_sequence.txt:2" in r.stderr and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_dvc_repro_prepare(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    seq = _seq_file(tmp_path)
    entry = {"format": "user_sequence", "path": str(seq), "filter": {"user_core": 5}, "split": {"name": "loo"}}
    params = {"base": {"dataset": "toy"}, "datasets": {"toy": entry, "other": dict(entry)}}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]
    stage["cmd"] = f"{sys.executable} {ROOT / 'pipeline' / 'prepare.py'}"
    stage["deps"] = []  # the code lives outside this throw-away project
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": stage}}))
    dvc = str(Path(sys.executable).with_name("dvc"))

    def repro() -> str:
        r = subprocess.run([dvc, "repro", "prepare"], cwd=proj, env=ENV, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=proj, env=ENV, check=True, timeout=120)
    assert "Running stage 'prepare'" in repro()
    split = proj / "data/prepared/toy/split.parquet"
    t0 = split.stat().st_mtime_ns
    assert "Running stage" not in repro() and split.stat().st_mtime_ns == t0
    params["datasets"]["other"]["split"] = {"name": "ratio"}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    assert "Running stage" not in repro()
    params["datasets"]["toy"]["split"] = {"name": "ratio"}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    assert "Running stage 'prepare'" in repro() and split.stat().st_mtime_ns != t0

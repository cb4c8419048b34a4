"""The DVC caching claims of the compress and distill stages, with the repository's own stage definitions:
changing a teacher parameter (``kdsr.D``) re-runs distill only; changing the autoencoder re-runs compress and
distill; nothing upstream of distill reads a ``kdsr`` parameter."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import make_project, small_params

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = ("prepare", "encode", "compress")  # encode@<key> and compress@<m>: one foreach each


def repo_stages():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_nothing_upstream_of_distill_reads_kdsr():
    stages = repo_stages()
    for name in UPSTREAM:
        st = stages[name].get("do", stages[name])
        assert not [p for p in st.get("params", []) if str(p).startswith("kdsr")], name
    distill = stages["distill"]["params"]
    assert {"kdsr.D", "kdsr.codes", "kdsr.quantizer", "kdsr.xi", "kdsr.pairs"} <= set(distill)
    assert "kdsr" not in distill and "kdsr.models" not in distill and "kdsr.presets" not in distill
    for name in ("train_kdsr", "evaluate_kdsr"):
        assert "models/${base.dataset}/teacher" in stages[name]["deps"]


def dvc(cwd, *args):
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(ROOT / "src"), "OMP_WAIT_POLICY": "PASSIVE"}
    r = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def ran(out):
    return sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))


def test_repro_reruns_only_what_a_parameter_touches(tmp_path):
    make_project(tmp_path)
    params = small_params()
    params["compress"]["seed"] = params["kdsr"]["seed"] = 7  # the stages' own seeds (tracked by compress, distill)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stages = {}
    for name in ("compress", "distill"):
        st = repo_stages()[name]
        body = dict(st.get("do", st))
        script = body["cmd"].split()[1]  # pipeline/<stage>.py, run from the repository
        body["cmd"] = body["cmd"].replace("python " + script, f"{sys.executable} {ROOT / script}")
        body["deps"] = [d for d in body["deps"] if not d.startswith(("src/", "pipeline/"))]
        stages[name] = {**({"foreach": st["foreach"], "do": body} if "foreach" in st else body)}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    dvc(tmp_path, "init", "--no-scm", "-q")

    assert ran(dvc(tmp_path, "repro")) == ["compress@image", "compress@text", "distill"]
    assert ran(dvc(tmp_path, "repro")) == []

    params["kdsr"]["D"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(tmp_path, "repro")) == ["distill"]

    params["compress"]["lr"] = 2e-2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert ran(dvc(tmp_path, "repro")) == ["compress@image", "compress@text", "distill"]

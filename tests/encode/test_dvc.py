"""DVC integration in a throw-away project with the repository's encode stage: a second `dvc repro` skips both
encode@image and encode@text, and changing the text encoder's params re-runs only encode@text (the image cache is
untouched)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def dvc(cwd, *args):
    exe = Path(sys.executable).with_name("dvc")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def test_repro_skips_unchanged_and_isolates_modalities(tmp_path, items_table, tiny_text_models, tiny_vision_models):
    proj = tmp_path / "proj"
    (proj / "data" / "prepared" / "toy").mkdir(parents=True)
    items_table.write_parquet(proj / "data" / "prepared" / "toy" / "items.parquet")
    params = {"base": {"dataset": "toy"}, "encode": {
        "image": {"family": "hf_vision", "weights": str(tiny_vision_models["vit"])},
        "text": {"family": "hf_text", "weights": str(tiny_text_models["bert"]), "template": "{title}. {description}"}}}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    # the repository's encode stage (foreach over the encode.* caches), for the image and text caches only
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["encode"]
    body = dict(stage["do"])
    assert body["cmd"].startswith("python pipeline/encode.py ")
    body["cmd"] = body["cmd"].replace("python pipeline/encode.py",
                                      f"{sys.executable} {ROOT / 'pipeline' / 'encode.py'}")
    body["deps"] = [d for d in body["deps"] if not d.startswith(("src/", "pipeline/"))]  # the code lives elsewhere
    assert body["deps"] == ["data/prepared/${base.dataset}/items.parquet"]
    foreach = {k: v for k, v in stage["foreach"].items() if k in ("image", "text")}
    assert foreach == {"image": "image.parquet", "text": "text.parquet"}
    (proj / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"encode": {"foreach": foreach, "do": body}}}))
    dvc(proj, "init", "--no-scm", "-q")
    out = dvc(proj, "repro")
    assert "Running stage 'encode@image'" in out and "Running stage 'encode@text'" in out
    img, txt = proj / "data/features/toy/image.parquet", proj / "data/features/toy/text.parquet"
    t_img, t_txt = img.stat().st_mtime_ns, txt.stat().st_mtime_ns

    out = dvc(proj, "repro")
    assert "Running stage" not in out and "didn't change, skipping" in out
    assert (img.stat().st_mtime_ns, txt.stat().st_mtime_ns) == (t_img, t_txt)

    params["encode"]["text"]["template"] = "{title}"
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    out = dvc(proj, "repro")
    assert "Running stage 'encode@text'" in out and "Running stage 'encode@image'" not in out
    assert img.stat().st_mtime_ns == t_img and txt.stat().st_mtime_ns != t_txt

"""`modalrec train` / `modalrec evaluate` resolve KDSR-family models through the kdsr section, like DVC does."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import modalrec.stages.evaluate as engine_evaluate
import modalrec.stages.train as engine_train
from modalrec import cli
from modalrec.stages.train_kdsr import FAMILY_ARCHS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def calls(monkeypatch, tmp_path):
    got = []
    monkeypatch.setattr(engine_train, "run", lambda params, **kw: got.append(("train", params, kw)))
    monkeypatch.setattr(engine_evaluate, "run", lambda params, **kw: got.append(("evaluate", params, kw)))
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["kdsr"]["forgetting"]["enabled"] = False  # the probe would read data/compressed
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return got, path, p


def test_cli_train_and_evaluate_resolve_kdsr_presets(calls):
    got, path, raw = calls
    runner = CliRunner()
    for cmd in ("train", "evaluate"):
        res = runner.invoke(cli.app, [cmd, "kdsr_parity", "--params", str(path), "--seed", "7"])
        assert res.exit_code == 0, res.output
    (_, tp, tkw), (_, ep, ekw) = got
    for params, kw in ((tp, tkw), (ep, ekw)):
        entry = params["models"]["kdsr_parity"]
        assert entry["weights"] == raw["kdsr"]["presets"]["kdsr_parity"]["weights"]  # folded in from the preset
        assert entry["holistic_loss"] == "frobenius" and entry["train"]["batch_size"] == 256
        assert entry["evaluate"]["select_on"] == "test_max"
        assert kw["model"] == "kdsr_parity" and kw["seed"] == 7
    assert tkw["lr_schedule"](1, "modality_tables") == pytest.approx(0.25)  # the parity preset's constant ε/4


def test_cli_leaves_other_models_to_the_engine(calls):
    got, path, raw = calls
    res = CliRunner().invoke(cli.app, ["train", "sasrec", "--params", str(path)])
    assert res.exit_code == 0, res.output
    (_, params, kw), = got
    assert params["models"]["sasrec"] == raw["models"]["sasrec"] and "lr_schedule" not in kw
    assert cli.KDSR_ARCHS == FAMILY_ARCHS

"""`modalrec train` / `modalrec evaluate` resolve KDSR-family models through the kdsr section, like DVC does: the
CLI and DVC's stages (``pipeline/<stage>.py``) hand the same arguments to the same ``stages.train.run`` /
``stages.evaluate.run`` for every family, and those resolve the model by its arch (``modalrec.runs.resolve_run``)."""

import runpy
import sys
from pathlib import Path

import pytest
import typer
import yaml
from dvc_tracking import FAMILY_STAGES
from typer.testing import CliRunner

import modalrec.stages.evaluate as engine_evaluate
import modalrec.stages.train as engine_train
from modalrec import cli
from modalrec.runs import FAMILY_ARCHS, resolve_run, training_hooks

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {"prepare", "encode", "compress", "distill", "train", "evaluate", "metrics", "report", "recommend"}


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


def _cli(*args):
    res = CliRunner().invoke(cli.app, list(args))
    assert res.exit_code == 0, res.output


def _script(monkeypatch, script, *args):
    """Run ``pipeline/<script>`` as DVC does (``python pipeline/<script> ...``), in this process."""
    monkeypatch.setattr(sys, "argv", [f"pipeline/{script}", *args])
    try:
        runpy.run_path(str(ROOT / "pipeline" / script), run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), e.code


def test_cli_train_and_evaluate_resolve_kdsr_presets(calls):
    got, path, raw = calls
    for cmd in ("train", "evaluate"):
        _cli(cmd, "kdsr_parity", "--params", str(path), "--seed", "7")
    (tc, tp, tkw), (ec, ep, ekw) = got
    assert (tc, ec) == ("train", "evaluate")
    for params, kw in ((tp, tkw), (ep, ekw)):
        assert params == raw and kw == {"model": "kdsr_parity", "seed": 7}  # the stage resolves, not the CLI
        spec = resolve_run(params, **kw)
        assert spec.family == "kdsr" and spec.seed == 7
        assert spec.cfg["weights"] == raw["kdsr"]["presets"]["kdsr_parity"]["weights"]  # folded in from the preset
        assert spec.cfg["holistic_loss"] == "frobenius" and spec.train.batch_size == 256
        assert spec.evaluate["select_on"] == "test_max"
    lr_schedule, probe = training_hooks(resolve_run(tp, **tkw), tp)  # what stages.train.run trains with
    assert lr_schedule(1, "modality_tables") == pytest.approx(0.25)  # the parity preset's constant ε/4
    assert probe.probe is None  # kdsr.forgetting.enabled: false (the loss-term sizes are always logged)


def test_cli_leaves_other_models_to_their_own_family(calls):
    got, path, raw = calls
    _cli("train", "sasrec", "--params", str(path))
    _cli("train", "odmt", "--params", str(path))
    (_, params, kw), (_, oparams, okw) = got
    assert params == oparams == raw and kw == {"model": "sasrec"} and okw == {"model": "odmt"}
    spec = resolve_run(params, **kw)  # a baseline: its entry as it stands, no family hooks
    assert spec.family == "baselines" and spec.seed == raw["base"]["seeds"][0]
    assert spec.cfg == {k: v for k, v in raw["models"]["sasrec"].items() if k != "arch"}
    assert training_hooks(spec, params) == (None, None)
    odmt = resolve_run(oparams, **okw)
    assert odmt.family == "odmt" and odmt.cfg["T"] == raw["odmt"]["datasets"][raw["base"]["dataset"]]["T"]
    assert odmt.train.optimizer == raw["odmt"]["train"]["optimizer"]
    assert training_hooks(odmt, oparams) == (None, None)
    assert set(FAMILY_ARCHS) == {"kdsr", "odmt"} and spec.arch not in sum(FAMILY_ARCHS.values(), ())


def test_one_command_per_stage_for_every_family():
    """No family-specific command (train-odmt, train-kdsr): `modalrec train` / `evaluate` serve every family."""
    assert set(typer.main.get_command(cli.app).commands) == COMMANDS
    res = CliRunner().invoke(cli.app, ["--help"])
    assert res.exit_code == 0 and all(f" {name} " in res.output for name in COMMANDS), res.output
    for gone in ("train-odmt", "evaluate-odmt", "train-kdsr", "evaluate-kdsr"):
        res = CliRunner().invoke(cli.app, [gone, "odmt"])
        assert res.exit_code == 2 and f"No such command '{gone}'" in res.output, gone


def test_dvc_stages_and_the_cli_make_the_same_call_for_every_family(calls, monkeypatch):
    """Each family's train/evaluate matrix runs `python pipeline/{train,evaluate}.py <model> --seed <seed>`, which
    makes exactly the call `modalrec train|evaluate <model> --seed <seed>` makes."""
    got, path, raw = calls
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for family, names in FAMILY_STAGES.items():
        first = raw["runs"][family][0]
        model = first["model"] if isinstance(first, dict) else first
        key = "${item.run.model}" if isinstance(first, dict) else "${item.model}"
        for stage, cmd in zip(names, ("train", "evaluate")):
            assert stages[stage]["cmd"] == f"python pipeline/{cmd}.py {key} --seed ${{item.seed}}", stage
            got.clear()
            _script(monkeypatch, f"{cmd}.py", model, "--seed", "11", "--params", str(path))
            _cli(cmd, model, "--seed", "11", "--params", str(path))
            (c1, p1, kw1), (c2, p2, kw2) = got
            assert (c1, p1, kw1) == (c2, p2, kw2) == (cmd, raw, {"model": model, "seed": 11}), stage
            assert resolve_run(p1, **kw1).family == family, stage

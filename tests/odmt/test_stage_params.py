"""The ODMT section of params.yaml folds into the model entries with the documented precedence
(:func:`modalrec.runs.resolve_run`: ``spec.cfg`` the model options, ``spec.train`` the trainer, ``spec.evaluate``
the protocol overrides)."""

import pytest

from modalrec.errors import ParamError
from modalrec.params import listed_runs, load_params
from modalrec.runs import ENTRY_KEYS, FAMILY_ARCHS, model_config, resolve_run
from modalrec.train.trainer import TrainConfig


def _params(**odmt):
    return {"base": {"dataset": "arts", "seeds": [1]},
            "models": {"odmt": {"d": 32}, "odmt_x": {"arch": "odmt", "T": 0.9, "train": {"epochs": 3}},
                       "sasrec": {"dim": 8}},
            "odmt": {"T": None, "alpha": None,
                     "datasets": {"arts": {"T": 0.3, "alpha": 20, "id_init": "avg", "train": {"epochs": 31}}},
                     "train": {"lr": 0.01, "epochs": 5}, "evaluate": {"mask_history": True}, **odmt}}


def test_per_dataset_values_fill_the_entry():
    p = _params()
    r = resolve_run(p, "odmt")
    assert (r.family, r.arch) == ("odmt", "odmt")
    assert r.cfg == {"d": 32, "T": 0.3, "alpha": 20, "id_init": "avg"}
    assert r.train == TrainConfig(lr=0.01, epochs=31)  # odmt.datasets.<ds>.train > odmt.train (no train section)
    assert r.evaluate == {"mask_history": True}
    assert p["models"]["odmt"] == {"d": 32}  # the input is not modified


def test_global_override_beats_dataset_and_model_entry_beats_both():
    r = resolve_run(_params(T=0.7), "odmt")
    assert r.cfg["T"] == 0.7
    r = resolve_run(_params(T=0.7), "odmt_x")
    assert r.cfg["T"] == 0.9 and r.train == TrainConfig(lr=0.01, epochs=3)


def test_baselines_keep_their_own_id_init_but_take_the_dataset_modalities():
    """ODMT's baselines are entries of arch odmt (params.yaml's sasrec_lf): what they set themselves wins."""
    p = _params()
    p["models"]["sasrec_lf"] = {"arch": "odmt", "tower": "separate", "id_init": "random", "objective": "late_fusion"}
    p["odmt"]["datasets"]["arts"]["modalities"] = ["text"]
    r = resolve_run(p, "sasrec_lf")
    assert r.family == "odmt"
    assert r.cfg["id_init"] == "random" and r.cfg["objective"] == "late_fusion" and r.cfg["tower"] == "separate"
    assert r.cfg["modalities"] == ["text"]
    assert r.train == TrainConfig(lr=0.01, epochs=31)


def test_errors_name_the_parameter():
    with pytest.raises(ParamError, match="models.nope"):
        resolve_run(_params(), "nope")
    # a model of another family gets nothing of the odmt section (its arch decides)
    r = resolve_run(_params(T=0.7), "sasrec")
    assert (r.family, r.cfg, r.evaluate, r.train) == ("baselines", {"dim": 8}, {}, TrainConfig())
    p = _params()
    p["models"]["bad"] = {"arch": "no_such_arch"}
    with pytest.raises(ParamError, match="models.bad.arch"):
        model_config(resolve_run(p, "bad"))
    p = _params()
    p["odmt"]["datasets"]["arts"]["tau"] = 1
    with pytest.raises(ParamError, match="odmt.datasets.arts.tau"):
        resolve_run(p, "odmt")


def test_repository_params_resolve_for_every_listed_model(repo_root):
    params = load_params(repo_root / "params.yaml")
    listed = listed_runs(params)["odmt"]
    assert listed
    for model in listed:
        r = resolve_run(params, model)
        assert r.family == "odmt" and r.arch in FAMILY_ARCHS["odmt"]
        model_config(r)  # the resolved options are valid Config fields


def test_dvc_stages_depend_on_the_odmt_section_only_where_they_should(repo_root):
    """`dvc exp run -S odmt.T=0.3` must re-run train_odmt / evaluate_odmt and no other family's stage."""
    import yaml

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    readers = {name for name, st in stages.items()
               for p in st.get("params", []) if isinstance(p, str) and (p == "odmt" or p.startswith("odmt.T"))}
    assert readers == {"train_odmt", "evaluate_odmt"}
    for name in ("train_odmt", "evaluate_odmt"):
        st = stages[name]
        assert st["matrix"] == {"model": "${runs.odmt}", "seed": "${base.seeds}"}
        assert "src/modalrec/models/odmt.py" in st["deps"] and "src" not in st["deps"]
        assert "data/features/${base.dataset}/image_tokens.arrow" in st["deps"]


def test_repository_params_carry_the_papers_per_dataset_values(repo_root):
    """paper-notes §3.7 (T, alpha, epochs, ID init); Office: the shared copy has no images, hence text only."""
    ds = load_params(repo_root / "params.yaml")["odmt"]["datasets"]
    paper = {"arts": (0.3, 20, 31, "avg"), "office": (0.4, 40, 30, "text"), "hm": (0.5, 60, 30, "avg"),
             "stream": (0.5, 50, 40, "text")}
    for name, (T, alpha, epochs, init) in paper.items():
        assert (ds[name]["T"], ds[name]["alpha"], ds[name]["train"]["epochs"], ds[name]["id_init"]) == \
            (T, alpha, epochs, init), name
    assert ds["office"]["modalities"] == ["text"]


def test_repository_ablations_match_table_3_and_build(repo_root):
    """Every ODMT-family entry of params.yaml resolves and builds; the Table 3 rows are there with their switch."""
    from modalrec.models import build_model

    from .helpers import context

    params = load_params(repo_root / "params.yaml")
    table3 = {"odmt_text_init": {"id_init": "text"}, "odmt_image_init": {"id_init": "image"},
              "odmt_no_init": {"id_init": "random"}, "odmt_no_id_mask": {"id_mask": False},
              "odmt_no_imt1": {"tower": "separate", "tower_layers": 2},
              "odmt_no_imt2": {"tower": "separate", "tower_layers": 1},
              "odmt_no_od": {"objective": "late_fusion"}, "odmt_no_id": {"use_id": False}}
    baselines = {"sasrec_ef": ("early", "independent", "separate", "random"),
                 "sasrec_lf": ("late", "late_fusion", "separate", "random")}
    family = [m for m, e in params["models"].items() if (e or {}).get("arch", m) in FAMILY_ARCHS["odmt"]]
    assert set(table3) | {"odmt", "sasrec_ef", "sasrec_lf"} <= set(family)
    for name in family:
        r = resolve_run(params, name, dataset="synthetic")
        assert r.family == "odmt"
        cfg = r.cfg
        assert not set(cfg) & set(ENTRY_KEYS), name  # only model Config fields
        for key, value in table3.get(name, {}).items():
            assert cfg[key] == value, (name, key)
        m = build_model(name, {**cfg, "d": 8}, context(12, 4), r.arch)
        if name in baselines:  # SASRec+EF / +LF: separate towers, random ID table, their own fusion and loss
            assert (m.cfg.fusion, m.cfg.objective, m.cfg.tower, m.cfg.id_init) == baselines[name], name

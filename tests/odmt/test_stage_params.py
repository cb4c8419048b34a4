"""The ODMT section of params.yaml folds into the model entries with the documented precedence."""

import pytest

from modalrec.errors import ParamError
from modalrec.params import load_params
from modalrec.stages.train_odmt import resolve


def _params(**odmt):
    return {"base": {"dataset": "arts"},
            "models": {"odmt": {"d": 32}, "odmt_x": {"arch": "odmt", "T": 0.9, "train": {"epochs": 3}},
                       "sasrec": {"dim": 8}},
            "odmt": {"models": ["odmt"], "T": None, "alpha": None,
                     "datasets": {"arts": {"T": 0.3, "alpha": 20, "id_init": "avg", "train": {"epochs": 31}}},
                     "train": {"lr": 0.01, "epochs": 5}, "evaluate": {"mask_history": True}, **odmt}}


def test_per_dataset_values_fill_the_entry():
    p = _params()
    r = resolve(p, "odmt")
    assert r["models"]["odmt"] == {"d": 32, "T": 0.3, "alpha": 20, "id_init": "avg",
                                   "train": {"lr": 0.01, "epochs": 31}, "evaluate": {"mask_history": True}}
    assert p["models"]["odmt"] == {"d": 32}  # the input is not modified


def test_global_override_beats_dataset_and_model_entry_beats_both():
    r = resolve(_params(T=0.7), "odmt")
    assert r["models"]["odmt"]["T"] == 0.7
    r = resolve(_params(T=0.7), "odmt_x")
    assert r["models"]["odmt_x"]["T"] == 0.9 and r["models"]["odmt_x"]["train"] == {"lr": 0.01, "epochs": 3}


def test_baselines_keep_their_own_id_init_but_take_the_dataset_modalities():
    p = _params()
    p["models"]["sasrec_lf"] = {"arch": "sasrec_lf"}
    p["odmt"]["datasets"]["arts"]["modalities"] = ["text"]
    entry = resolve(p, "sasrec_lf")["models"]["sasrec_lf"]
    assert "id_init" not in entry and "T" not in entry and entry["modalities"] == ["text"]
    assert entry["train"] == {"lr": 0.01, "epochs": 31}


def test_errors_name_the_parameter():
    with pytest.raises(ParamError, match="models.nope"):
        resolve(_params(), "nope")
    with pytest.raises(ParamError, match="models.sasrec.arch"):
        resolve(_params(), "sasrec")
    p = _params()
    p["odmt"]["datasets"]["arts"]["tau"] = 1
    with pytest.raises(ParamError, match="odmt.datasets.arts.tau"):
        resolve(p, "odmt")


def test_repository_params_resolve_for_every_listed_model(repo_root):
    params = load_params(repo_root / "params.yaml")
    for model in params["odmt"]["models"]:
        entry = resolve(params, model)["models"][model]
        assert entry.get("arch", model) in ("odmt", "sasrec_ef", "sasrec_lf")


def test_dvc_stages_depend_on_the_odmt_section_only_where_they_should(repo_root):
    """`dvc exp run -S odmt.T=0.3` must re-run train_odmt / evaluate_odmt and no other family's stage."""
    import yaml

    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    readers = {name for name, st in stages.items()
               for p in st.get("params", []) if isinstance(p, str) and (p == "odmt" or p.startswith("odmt.T"))}
    assert readers == {"train_odmt", "evaluate_odmt"}
    for name in ("train_odmt", "evaluate_odmt"):
        st = stages[name]
        assert st["matrix"] == {"model": "${odmt.models}", "seed": "${base.seeds}"}
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
    from modalrec.stages.train import ENTRY_KEYS

    from .helpers import context

    params = load_params(repo_root / "params.yaml")
    table3 = {"odmt_text_init": {"id_init": "text"}, "odmt_image_init": {"id_init": "image"},
              "odmt_no_init": {"id_init": "random"}, "odmt_no_id_mask": {"id_mask": False},
              "odmt_no_imt1": {"tower": "separate", "tower_layers": 2},
              "odmt_no_imt2": {"tower": "separate", "tower_layers": 1},
              "odmt_no_od": {"objective": "late_fusion"}, "odmt_no_id": {"use_id": False}}
    baselines = {"sasrec_ef": ("early", "independent", "separate", "random"),
                 "sasrec_lf": ("late", "late_fusion", "separate", "random")}
    family = [m for m, e in params["models"].items() if (e or {}).get("arch", m) in ("odmt", "sasrec_ef", "sasrec_lf")]
    assert set(table3) | {"odmt", "sasrec_ef", "sasrec_lf"} <= set(family)
    for name in family:
        entry = resolve(params, name, dataset="synthetic")["models"][name]
        arch = entry.get("arch", name)
        cfg = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        for key, value in table3.get(name, {}).items():
            assert cfg[key] == value, (name, key)
        m = build_model(name, {**cfg, "d": 8}, context(12, 4), arch)
        if arch in baselines:  # SASRec+EF / +LF: separate towers, random ID table, their own fusion and loss
            assert (m.cfg.fusion, m.cfg.objective, m.cfg.tower, m.cfg.id_init) == baselines[arch], name

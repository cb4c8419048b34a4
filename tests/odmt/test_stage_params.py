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

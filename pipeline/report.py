"""DVC stage `report`: reports/summary.md, reports/summary.json and reports/plots/ from the evaluated runs."""
import argparse

from modalrec.cli_utils import run_main
from modalrec.params import load_params
from modalrec.stages.report import run

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--exps", action="store_true", help="first export `dvc exp show --json` for the sweep plot")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), exps=a.exps))

"""DVC stage `evaluate_kdsr`: evaluate one KDSR-family model (a model listed in kdsr.models) for one seed."""
import argparse

from modalrec.cli_utils import run_main
from modalrec.params import load_params
from modalrec.stages.evaluate_kdsr import run

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--model", required=True, help="a model listed in kdsr.models")
p.add_argument("--seed", type=int, default=None, help="default: the first of base.seeds")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), model=a.model, seed=a.seed))

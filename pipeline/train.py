"""DVC stage `train`: train one model (a name under params.yaml `models`) for one seed."""
import argparse
import os

# OpenMP threads that spin while waiting make small-model training 5-10x slower on a busy CPU; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from modalrec.cli_utils import run_main  # noqa: E402
from modalrec.params import load_params  # noqa: E402
from modalrec.stages.train import run  # noqa: E402

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--model", required=True, help="a model listed in train.models")
p.add_argument("--seed", type=int, default=None, help="default: the first of base.seeds")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), model=a.model, seed=a.seed))

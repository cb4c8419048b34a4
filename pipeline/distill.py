"""DVC stage `distill`: fit KDSR's correlation teacher (codebooks over dissected correlations) from m̃."""
import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede torch (see pipeline/train.py)

from modalrec.cli_utils import run_main  # noqa: E402
from modalrec.params import load_params  # noqa: E402
from modalrec.stages.distill import run  # noqa: E402

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--dataset", default=None, help="override base.dataset")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), dataset=a.dataset))

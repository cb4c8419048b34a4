"""DVC stage `prepare`: read raw files, filter, split; write data/prepared/<dataset>/."""
import argparse

from modalrec.cli_utils import run_main
from modalrec.params import load_params
from modalrec.stages.prepare import run

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--dataset", default=None, help="override base.dataset")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), dataset=a.dataset))

"""DVC stage `encode_<modality>`: encode item images or texts into data/features/<dataset>/."""
import argparse

from modalrec.cli_utils import run_main
from modalrec.params import load_params
from modalrec.stages.encode import OUTPUTS, run

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--modality", required=True, choices=sorted(OUTPUTS))
p.add_argument("--dataset", default=None, help="override base.dataset")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), modality=a.modality, dataset=a.dataset))

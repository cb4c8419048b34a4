"""DVC stage `metrics`: collect reports/<ds>/<model>/s<seed>/metrics.json into the flat reports/metrics.json."""
import argparse

from modalrec.cli_utils import run_main
from modalrec.params import load_params
from modalrec.stages.metrics import run

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
a = p.parse_args()
run_main(lambda: run(load_params(a.params)))

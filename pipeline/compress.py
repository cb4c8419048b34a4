"""DVC stage `compress@<modality>`: fit the autoencoder on a feature cache; write m̃ and the AE weights."""
import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede torch (see pipeline/train.py)

from modalrec.cli_utils import run_main  # noqa: E402
from modalrec.params import load_params  # noqa: E402
from modalrec.stages.compress import MODALITIES, run  # noqa: E402

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--params", default="params.yaml")
p.add_argument("--modality", required=True, choices=MODALITIES)
p.add_argument("--dataset", default=None, help="override base.dataset")
a = p.parse_args()
run_main(lambda: run(load_params(a.params), modality=a.modality, dataset=a.dataset))

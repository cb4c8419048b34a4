"""DVC stage `train`: train one model of any family (baselines, KDSR, ODMT) for one seed -> models/<ds>/<model>/s<seed>/.

    python pipeline/train.py <model> [--seed S] [--dataset D]

The same command as `modalrec train` (modalrec.cli), which calls modalrec.stages.train.run."""
import sys

from modalrec.cli import main

main(["train", *sys.argv[1:]], prog_name="pipeline/train.py")

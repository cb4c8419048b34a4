"""DVC stage `evaluate`: full-ranking evaluation of one trained model and seed -> reports/<ds>/<model>/s<seed>/.

    python pipeline/evaluate.py <model> [--seed S] [--dataset D]

The same command as `modalrec evaluate` (modalrec.cli), which calls modalrec.stages.evaluate.run."""
import sys

from modalrec.cli import main

main(["evaluate", *sys.argv[1:]], prog_name="pipeline/evaluate.py")

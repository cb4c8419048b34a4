"""DVC stage `metrics`: collect the listed runs' metrics into the flat reports/metrics.json (dvc metrics diff).

    python pipeline/metrics.py [--dataset D]

The same command as `modalrec metrics` (modalrec.cli), which calls modalrec.stages.metrics.run."""
import sys

from modalrec.cli import main

main(["metrics", *sys.argv[1:]], prog_name="pipeline/metrics.py")

"""DVC stage `report`: reports/summary.md, summary.json and reports/plots/ from the evaluated runs.

    python pipeline/report.py [--exps]

The same command as `modalrec report` (modalrec.cli), which calls modalrec.stages.report.run."""
import sys

from modalrec.cli import main

main(["report", *sys.argv[1:]], prog_name="pipeline/report.py")

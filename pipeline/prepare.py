"""DVC stage `prepare`: read the raw files, filter (core-k), split -> data/prepared/<ds>/.

    python pipeline/prepare.py [--dataset D]

The same command as `modalrec prepare` (modalrec.cli), which calls modalrec.stages.prepare.run."""
import sys

from modalrec.cli import main

main(["prepare", *sys.argv[1:]], prog_name="pipeline/prepare.py")

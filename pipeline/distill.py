"""DVC stage `distill`: fit KDSR's correlation teacher (codebooks over dissected correlations of m~) -> models/<ds>/teacher/.

    python pipeline/distill.py [--dataset D]

The same command as `modalrec distill` (modalrec.cli), which calls modalrec.stages.distill.run."""
import sys

from modalrec.cli import main

main(["distill", *sys.argv[1:]], prog_name="pipeline/distill.py")

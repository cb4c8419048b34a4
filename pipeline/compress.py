"""DVC stage `compress`: fit the autoencoder on a feature cache -> data/compressed/<ds>/<m>.parquet (m~) + models/<ds>/ae/.

    python pipeline/compress.py --modality {image,text} [--dataset D]

The same command as `modalrec compress` (modalrec.cli), which calls modalrec.stages.compress.run."""
import sys

from modalrec.cli import main

main(["compress", *sys.argv[1:]], prog_name="pipeline/compress.py")

"""DVC stage `encode`: encode item images or texts with a frozen encoder -> data/features/<ds>/.

    python pipeline/encode.py --modality {image,text,image_tokens,text_tokens} [--dataset D]

The same command as `modalrec encode` (modalrec.cli), which calls modalrec.stages.encode.run."""
import sys

from modalrec.cli import main

main(["encode", *sys.argv[1:]], prog_name="pipeline/encode.py")

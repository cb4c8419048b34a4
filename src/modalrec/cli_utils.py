"""Turn library errors into one-line messages and a non-zero exit for pipeline scripts and the CLI."""

from __future__ import annotations

import sys
from typing import Callable

from .errors import ModalrecError


def run_main(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ModalrecError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

"""modalrec: reproducible multi-modal sequential recommendation (KDSR, ODMT and baselines)."""

import os as _os
import time as _time

_LOADED = _time.perf_counter()

# OpenMP threads that spin while waiting make small-model training 5-10x slower on a busy CPU. The variable is read
# once when torch loads OpenMP, so it is set here, before any modalrec module imports torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def wall_seconds() -> float:
    """Seconds since this process loaded modalrec: a stage's whole wall time, interpreter and torch start-up
    included (each stage's one-line summary ends with it)."""
    return _time.perf_counter() - _LOADED

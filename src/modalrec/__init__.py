"""modalrec: reproducible multi-modal sequential recommendation (KDSR, ODMT and baselines)."""

__version__ = "0.1.0"

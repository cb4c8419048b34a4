"""Stage runners: read a params dict, call the library, write the declared outputs atomically.

pipeline/<stage>.py (DVC) and the `modalrec` CLI both call these, so the two paths can never diverge."""

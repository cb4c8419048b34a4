"""Analyses run during or after training (KDSR modality forgetting) and the synthetic catalogue's learnability
probes (used by tests and benchmarks only)."""

"""Analyses run during or after training (KDSR modality forgetting)."""

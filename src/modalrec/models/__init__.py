"""Models: one file per model, each registering itself by name (see base.py for the contract)."""

from .base import Batch, ModelContext, SeqRecModel, available_models, build_model, register_model

__all__ = ["Batch", "ModelContext", "SeqRecModel", "available_models", "build_model", "register_model"]

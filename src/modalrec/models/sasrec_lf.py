"""SASRec+LF: late fusion of ID, text and image SASRecs (ODMT paper §2.1 and Table 2 baseline).

Each modality has its own two-layer Transformer "FST" over its frozen tokens (no ID token, no IMT), the ID branch is
a randomly initialised embedding table, one SASRec runs per branch, and the loss is a single debiased in-batch
cross-entropy on the *averaged* branch logits. This is also ODMT's "w/o online distillation" objective. Scores are
the average of the branches' scores, exactly as ODMT, so the two differ only in the tower and the objective.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import register_model
from .odmt import ODMT, ODMTConfig


@dataclass
class SASRecLFConfig(ODMTConfig):
    tower: str = "separate"
    id_init: str = "random"
    objective: str = "late_fusion"


@register_model("sasrec_lf")
class SASRecLF(ODMT):
    Config = SASRecLFConfig

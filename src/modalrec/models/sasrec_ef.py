"""SASRec+EF: early fusion of ID, text and image into one SASRec (ODMT paper §2.1 and Table 2 baseline).

The item vector is the average of the ID embedding and the text and image vectors (each modality through its own
two-layer Transformer "FST" and DNN head, as in SASRec+LF); a single SASRec encodes the sequence of fused vectors and
scores the fused item vectors, trained with the debiased in-batch cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import register_model
from .odmt import ODMT, ODMTConfig


@dataclass
class SASRecEFConfig(ODMTConfig):
    tower: str = "separate"
    id_init: str = "random"
    fusion: str = "early"
    objective: str = "independent"


@register_model("sasrec_ef")
class SASRecEF(ODMT):
    Config = SASRecEFConfig

"""``report`` section of params.yaml: what the summary shows and how it tests and plots."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParamError
from ..params import dataclass_from
from .significance import METHODS


@dataclass
class ReportConfig:
    datasets: list[str] | None = None  # None = [base.dataset]
    metrics: list[str] = field(default_factory=lambda: ["hr", "mrr", "ndcg"])
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    proposed: list[str] | None = None  # None = the listed runs that modalrec.params.is_proposed marks (KDSR, ODMT)
    split_protocols: bool = True  # one table per evaluation protocol (else one table per dataset + a warning)
    test: str = "ttest"  # ttest | wilcoxon
    alpha: float = 0.05
    digits: int = 4
    curves: list[str] = field(default_factory=lambda: ["train/loss", "valid/ndcg@10", "valid/hr@10"])
    branch_metric: str = "hr@10"  # the per-branch validation curves of multi-branch runs (ODMT: its monitor)
    popularity: dict[str, Any] = field(default_factory=lambda: {"groups": 5, "metric": "ndcg@10"})
    sweep: dict[str, Any] = field(default_factory=lambda: {"param": "kdsr.D", "metric": "test/ndcg@10",
                                                            "exps": "reports/exps.json"})

    def __post_init__(self) -> None:
        if self.test not in METHODS:
            raise ParamError("report.test", f"must be one of {METHODS}, got {self.test!r}")
        if not 0 < float(self.alpha) < 1:
            raise ParamError("report.alpha", f"must be in (0, 1), got {self.alpha!r}")
        if not self.ks or any(int(k) < 1 for k in self.ks):
            raise ParamError("report.ks", f"must be positive integers, got {self.ks!r}")
        g = self.popularity.get("groups", 5)
        if not isinstance(g, int) or g < 1:
            raise ParamError("report.popularity.groups", f"must be an integer >= 1, got {g!r}")
        if not re.fullmatch(r"[a-z]+@\d+", str(self.popularity.get("metric", "ndcg@10"))):
            raise ParamError("report.popularity.metric", "must look like 'ndcg@10'")

    @classmethod
    def from_params(cls, section: dict[str, Any] | None) -> "ReportConfig":
        """Through :func:`modalrec.params.dataclass_from`: unknown keys and mistyped values name ``report.<key>``."""
        return dataclass_from(cls, section, "report")

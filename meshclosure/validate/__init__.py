"""The validation hierarchy (DESIGN.md §9): offline skill, partially coupled runs, long
online runs judged by stability, conservation and emergent statistics, and the report.

* :func:`validate` — every stage for a learned closure next to the calibrated
  baselines, no closure and the truth replay (:mod:`~meshclosure.validate.hierarchy`);
  :func:`write_report` — the report folder (:mod:`~meshclosure.validate.report`).
"""
from .hierarchy import HEADLINE, ValidationResult, load_closure, validate
from .report import REPORT_FILES, write_report

__all__ = ["validate", "ValidationResult", "load_closure", "HEADLINE", "write_report",
           "REPORT_FILES"]

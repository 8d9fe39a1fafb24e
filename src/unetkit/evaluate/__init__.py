"""The evaluate application: pair prediction and truth files, read them, score them, write the report.

The metrics themselves are pure functions on arrays in :mod:`unetkit.metrics`; this package adds the
file I/O around them (used by ``unetkit evaluate``).
"""

from __future__ import annotations

from unetkit.evaluate.run import EvaluateOptions, EvaluationResult, evaluate_arrays, evaluate_folders

__all__ = ["EvaluateOptions", "EvaluationResult", "evaluate_arrays", "evaluate_folders"]

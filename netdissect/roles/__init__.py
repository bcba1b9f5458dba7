"""The role of units in a classifier (PNAS 2020): ablation, per-class importance, units as classifiers,
adversarial attacks explained.

    >>> from netdissect.roles import Evaluator, importance_table, balanced_accuracy   # doctest: +SKIP

See docs/roles.md; the command line is ``netdissect ablate`` and ``netdissect adversarial``.
"""
from netdissect.roles.core import (Evaluator, balanced_accuracy, best_thresholds, head_after, importance_table,
                                   peaks, ranking, removal_curves, unit_classifiers)

__all__ = ["Evaluator", "balanced_accuracy", "best_thresholds", "head_after", "importance_table", "peaks",
           "ranking", "removal_curves", "unit_classifiers"]

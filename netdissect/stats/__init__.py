"""Streaming, mergeable statistics.

Every statistic has ``add(...)``, named readouts, ``merge(other)`` and
``state_dict()``/``load_state_dict()`` as plain numpy arrays (saved as npz,
never pickled), so a run can checkpoint, resume, and combine shards.
"""
from netdissect.stats.iou import IoUCounts, LabelBatch
from netdissect.stats.quantile import DEFAULT_MEMORY, TopQuantile, kept_count, load_quantile_state, quantile_plan
from netdissect.stats.topk import TopImages

__all__ = ["TopQuantile", "TopImages", "IoUCounts", "LabelBatch", "kept_count", "load_quantile_state",
           "quantile_plan", "DEFAULT_MEMORY"]

"""Between and after the passes: the statistics of every shard (torchrun rank) merged exactly.

Every rank calls these (they are collectives); in one process they merge nothing.
"""
from __future__ import annotations

from netdissect.dissection.distributed import Group, combine_counts, combine_tops
from netdissect.errors import DatasetError, LayerError


def merge_pass1(state, group: Group) -> None:
    """Layer shapes, thresholds and top images over every rank's rows."""
    shapes: dict[str, tuple] = {}
    for r, theirs in enumerate(group.gather(state.shapes)):
        for name, shape in theirs.items():
            if shapes.setdefault(name, tuple(shape)) != tuple(shape):
                raise LayerError(f"layer {name!r} outputs {shapes[name]} on one rank and {tuple(shape)} "
                                 f"on rank {r}: every image must give the same feature-map size")
    if len(shapes) < len(state.layers):
        raise DatasetError(f"no usable row in {state.probe.describe()} (all {len(state.probe)} rows were skipped)")
    for name in state.layers:
        if name not in state.shapes:  # this rank had no usable row
            state.allocate(name, shapes[name])
        if name in state.quantiles:  # (PNAS runs threshold the upsampled maps instead, after this merge)
            state.thresholds[name] = exact_thresholds(state, name, group)
        if group.distributed:
            C, h, w = state.shapes[name]
            state.merged_tops[name] = combine_tops(group.gather(state.tops[name].state_dict()),
                                                   C, state.topk, (h, w))
        else:
            state.merged_tops[name] = state.tops[name]


def exact_thresholds(state, name: str, group: Group):
    """Layer ``name``'s thresholds over every rank: from the pass-1 statistic when its exact buffer
    fit ``quantile_memory``, else through further passes over the activation caches (radix
    selection; every rank feeds its own rows and the counts are summed), exact either way."""
    stat = group.merge_quantile(state.quantiles[name])
    while not stat.exact:
        stat = stat.refinement()
        state.feed_cache(name, stat)
        stat = group.merge_quantile(stat)
    return stat.threshold()


def merge_pass2(state, group: Group) -> None:
    """IoU counts, skipped rows and unknown labels over every rank's rows."""
    for name in state.layers:
        if name not in state.counts:
            state.counts[name] = state.new_counts(name)
        if group.distributed:
            state.merged_counts[name] = combine_counts(group.gather(state.counts[name].state_dict()),
                                                       *state.count_dims(name), device=state.device)
        else:
            state.merged_counts[name] = state.counts[name]
    state.all_skipped = {i: e for part in group.gather(state.skipped) for i, e in part.items()}
    state.all_unknown = sum(group.gather(state.unknown_labels))
    state.all_positions = sum(group.gather(state.label_positions))
    tied = group.gather(state.tied)
    state.all_tied = {name: sum(t.get(name, 0) for t in tied) for name in state.layers}

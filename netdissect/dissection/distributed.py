"""The processes of one dissection: a single process, or the ranks of ``torchrun``.

    torchrun --nproc_per_node 4 -m netdissect dissect --model ... --out runs/r18

:func:`Group.from_env` reads torchrun's environment (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``) and joins the process group (gloo on CPU, nccl on CUDA) unless
the caller already did.  Each rank dissects a contiguous slice of the dataset
rows (:func:`shard_rows`); the statistics then merge *exactly* through
collectives, so every rank ends with the result a single process computes:

- the quantile buffers (the ``keep`` largest values of each unit) are
  all-gathered in unit blocks and cut back to ``keep`` (:meth:`Group.merge_quantile`);
- top images, IoU counts, skipped rows go through ``all_gather_object`` and
  the statistics' own ``merge`` (:func:`combine_tops`, :func:`combine_counts`).

A single process is a :class:`Group` of one, whose collectives return their
input, so the engine has one code path.

    >>> g = Group.from_env("cpu")       # no torchrun: rank 0 of 1
    >>> g.rank, g.world, shard_rows(10, 0, 1)
    (0, 1, (0, 10))
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from netdissect.errors import NetDissectError
from netdissect.stats import IoUCounts, TopImages, TopQuantile
from netdissect.stats.quantile import load_quantile_state


def shard_rows(n: int, part: int, parts: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of part ``part`` of ``parts`` contiguous, near-equal slices of ``n`` rows.

    >>> [shard_rows(10, i, 3) for i in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    """
    return n * part // parts, n * (part + 1) // parts


def resolve_device(device: str, local_rank: int = 0, world: int = 1) -> str:
    """``device`` checked; a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise NetDissectError(f"--device {device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NetDissectError(f"--device {device}: CUDA is not available here (no GPU, or a CPU-only torch build)")
        index = dev.index if dev.index is not None else (local_rank if world > 1 else 0)
        if index >= torch.cuda.device_count():
            raise NetDissectError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                                  f"rank with LOCAL_RANK={local_rank} wants cuda:{index}")
        return f"cuda:{index}"
    return str(dev)


class Group:
    """Rank ``rank`` of ``world`` processes; the collectives the engine needs."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, device: str = "cpu",
                 owned: bool = False):
        self.rank, self.world, self.local_rank, self.device, self.owned = rank, world, local_rank, device, owned

    @classmethod
    def from_env(cls, device: str = "cpu") -> "Group":
        """Join torchrun's process group when ``WORLD_SIZE`` > 1 (or use one already initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            world, rank = dist.get_world_size(), dist.get_rank()
            local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count() or 1)))
            dev = resolve_device(device, local, world)
            return cls(rank, world, local, dev, owned=False)
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world <= 1:
            return cls(device=resolve_device(device))
        if not dist.is_available():
            raise NetDissectError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise NetDissectError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun "
                                      "(torchrun --nproc_per_node N -m netdissect dissect ...)")
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local, world)
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
            backend = "nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        return cls(rank, world, local, dev, owned=True)

    # ------------------------------------------------------------ basics
    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def _coll_device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device(self.device) if dist.get_backend() == "nccl" else torch.device("cpu")

    def gather(self, obj: Any) -> list:
        """``obj`` of every rank, in rank order (picklable objects; small ones)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, error: str | None, cls=NetDissectError) -> None:
        """Raise ``cls`` on every rank when any rank reports an error (so none waits on the others)."""
        errors = [(r, e) for r, e in enumerate(self.gather(error)) if e]
        if errors:
            r, e = errors[0]
            raise cls(e if not self.distributed or r == self.rank else f"rank {r}: {e}")

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group if :meth:`from_env` created it."""
        if self.owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owned = False

    # ------------------------------------------------------------ model and statistics
    def broadcast_module(self, model: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (as DDP does), so that
        randomly initialised models are the same model on every rank."""
        if not self.distributed:
            return
        import torch.distributed as dist

        dev = self._coll_device
        with torch.no_grad():
            for t in model.state_dict().values():
                if not isinstance(t, torch.Tensor) or t.numel() == 0:
                    continue
                buf = t.detach().to(dev).contiguous()
                if buf.dtype == torch.bool:
                    buf = buf.to(torch.uint8)
                dist.broadcast(buf, src=0)
                assign_broadcast(t, buf)

    def merge_quantile(self, tq: TopQuantile, block_floats: int = 1 << 26) -> TopQuantile:
        """The exact merge of every rank's ``tq`` (which must share units, q, total and memory, so
        every rank is in the same mode).  Exact mode: all-gather the ``keep`` largest values per
        unit, in blocks of units, and keep the largest.  Radix mode: sum the counts (all-reduce)."""
        if not self.distributed:
            return tq
        import torch.distributed as dist

        totals = self.gather((tq.mode, tq.units, tq.q, tq.total, tq.memory, tq.count))
        if len({t[:5] for t in totals}) != 1:
            raise NetDissectError(f"ranks disagree on the quantile statistics (mode, units, q, total, memory): {totals}")
        if tq.mode != "exact":
            dev = self._coll_device

            def allreduce(t):
                buf = t.to(dev).contiguous()
                dist.all_reduce(buf)
                t.copy_(buf.to(t.device))

            tq.reduce_sum(allreduce)
            return tq
        keep, dev = tq.keep, self._coll_device
        top = tq.top.detach().to(dev, torch.float32)
        if top.shape[1] < keep:  # fewer values than keep on this rank: pad with -inf (never a real value)
            top = torch.cat([top, torch.full((tq.units, keep - top.shape[1]), -float("inf"), device=dev)], 1)
        merged = torch.empty((tq.units, keep), dtype=torch.float32)
        step = max(1, block_floats // max(1, keep * self.world))
        for s in range(0, tq.units, step):
            part = top[s:s + step].contiguous()
            bufs = [torch.empty_like(part) for _ in range(self.world)]
            dist.all_gather(bufs, part)
            both = torch.cat(bufs, 1)
            merged[s:s + step] = both.topk(keep, dim=1, sorted=False).values.cpu()
        out = TopQuantile(tq.units, tq.q, tq.total, device=tq.device, memory=tq.memory)
        return out.load_state_dict({"top": merged.numpy(), "count": sum(t[5] for t in totals),
                                    "q": tq.q, "total": tq.total})


# ---------------------------------------------------------------- in-process merges (shards or chunks)
def combine_quantiles(parts: list[TopQuantile]) -> TopQuantile:
    """The exact merge of quantile statistics computed on disjoint rows (either mode)."""
    out = load_quantile_state(parts[0].state_dict(), parts[0].device)
    for p in parts[1:]:
        out.merge(p)
    return out


def combine_tops(states: list[dict], units: int, k: int, map_shape: tuple) -> TopImages:
    """Top images of disjoint rows (``TopImages.state_dict()`` of each), merged."""
    out = TopImages(units, k, map_shape)
    for s in states:
        out.merge(TopImages(units, k, map_shape).load_state_dict(s))
    return out


def combine_counts(states: list[dict], units: int, concepts: int, categories: int, device) -> IoUCounts:
    """IoU counts of disjoint rows (``IoUCounts.state_dict()`` of each), summed."""
    out = IoUCounts(units, concepts, categories, device=device)
    for s in states:
        out.merge(IoUCounts(units, concepts, categories, device=device).load_state_dict(s))
    return out


def assign_broadcast(t: torch.Tensor, buf: torch.Tensor) -> None:
    """Write ``buf`` (a contiguous copy of rank 0's ``t``) into ``t`` in place.

    A buffer may be an expanded view (stride 0 along a dimension, e.g. ``torch.ones(1).expand(8)``
    registered as a buffer): ``copy_`` refuses to write to it, since several elements share one
    memory location.  Such a tensor is written through the slice that owns its memory (index 0
    along every stride-0 dimension), which rank 0's copy holds identically along that dimension."""
    src = buf.to(device=t.device, dtype=t.dtype)
    dst = t
    for d in range(t.dim()):
        if t.stride(d) == 0 and t.size(d) > 1:
            dst, src = dst.narrow(d, 0, 1), src.narrow(d, 0, 1)
    dst.copy_(src)

"""``netdissect merge``: complete a run from the chunk folders of ``netdissect dissect --chunk I/N``."""
from __future__ import annotations

import argparse

INTERRUPTED = "interrupted; the chunk folders keep the merge's checkpoints: rerun the same merge to continue"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "merge",
        help="merge the chunks of a chunked dissection into one run",
        description="Combine the pass-1 statistics of every chunk (from `netdissect dissect ... --chunk I/N "
        "--out CHUNK`) into exact thresholds, count IoU chunk by chunk from their caches (checkpointed into "
        "the chunk folders: rerun to continue), and write the run directory --out. The result equals a "
        "single run's.",
        epilog="example: netdissect merge chunks/c0 chunks/c1 chunks/c2 --out runs/r18",
    )
    p.add_argument("chunks", nargs="+", metavar="CHUNK", help="every chunk folder of the run (any order)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--dataset", default=None,
                   help="the dataset folder, when it is not at the path the chunks recorded")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (for the IoU pass)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: min(4, cores))")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--remove-chunks", action="store_true", help="delete the chunk folders once --out is written")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from netdissect.dissection.chunks import merge_chunks

    result = merge_chunks(args.chunks, args.out, dataset=args.dataset, device=args.device,
                          num_workers=args.workers, progress=not args.quiet,
                          checkpoint_every=args.checkpoint_every, remove_chunks=args.remove_chunks)
    print(result.table())
    if not args.no_report:
        try:
            from netdissect.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            print(f"report: {write_report(args.out)}")
    print(f"results: {args.out}")
    return 0

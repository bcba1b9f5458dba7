"""``netdissect merge``: complete a run from the chunk folders of ``netdissect dissect --chunk I/N``."""
from __future__ import annotations

import argparse
from pathlib import Path

from netdissect.runfolder import CHUNK_FILE

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
                   help="the dataset (or image) folder, when it is not at the path the chunks recorded")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (for the IoU pass)")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes (default: min(4, cores))")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--remove-chunks", action="store_true", help="delete the chunk folders once --out is written")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from netdissect.runfolder import check_merge_folders, check_out, lock_folders, read_chunk_info

    # what can be refused is refused before any work, and before --out is created
    check_merge_folders(args.chunks, args.out)
    for d in args.chunks:
        if (Path(d) / CHUNK_FILE).exists():
            read_chunk_info(d)  # a damaged chunk.json: one line naming it (an absent one: merge_chunks says why)
    created = not Path(args.out).exists()
    out = check_out(args.out)
    try:
        with lock_folders([out], what="run folder", flag="--out"), \
                lock_folders([d for d in args.chunks if Path(d).is_dir()], what="chunk folder"):
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
    except BaseException:
        if created:  # a merge refused (e.g. a missing chunk) leaves no empty --out behind
            try:
                out.rmdir()
            except OSError:
                pass  # not empty: keep what was written
        raise
    print(f"results: {args.out}")
    return 0

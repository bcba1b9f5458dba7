"""``netdissect download``: fetch a Broden dataset or a weights file, resumably and verified.

    netdissect download --list
    netdissect download broden1_224 --to data
    netdissect download broden1_224 --to data --url https://mirror.example/broden1_224.zip
    netdissect download /downloads/broden1_224.zip --to data       # a local zip
    netdissect download vgg16_places365 --to weights

Prints the dataset root (the folder holding index.csv), or the weights file,
on the last line of stdout.  An interrupted download resumes when the same
command runs again.
"""
from __future__ import annotations

import argparse
import os

from netdissect.data.download import ASSETS, fetch_dataset, fetch_weights
from netdissect.errors import DownloadError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "download",
        help="download a Broden dataset or published weights (resumable, verified)",
        description="Fetch a Broden dataset or a weights file, resumably and verified.",
        epilog="The netdissect.csail.mit.edu links are reported dead at times: "
               "use --url MIRROR, or pass a local .zip or folder as NAME.",
    )
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="a registry name (see --list), a URL, a local .zip, or an extracted folder")
    p.add_argument("--to", metavar="DIR", help="folder to download and extract into")
    p.add_argument("--url", metavar="MIRROR", help="download from this URL (or local file) instead")
    p.add_argument("--sha256", metavar="HEX", help="expected SHA-256 (64 hex digits) of the download")
    p.add_argument("--size", type=int, metavar="BYTES", help="expected size of the download in bytes")
    p.add_argument("--keep-zip", action="store_true", help="keep the downloaded zip after extraction")
    p.add_argument("--timeout", type=float, default=60, metavar="S", help="network timeout (default 60)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--resume", action="store_true",
                   help="accepted for symmetry: a download always resumes its .part file")
    p.add_argument("--list", action="store_true", help="list the known datasets and weights")
    return p


def _list() -> None:
    width = max(len(n) for n in ASSETS)
    for a in ASSETS.values():
        check = f"sha256 {a.sha256_prefix}..." if a.sha256_prefix else ("sha256" if a.sha256 else "")
        print(f"{a.name:<{width}}  {a.kind:<7}  {a.url}  {check}".rstrip())


def run(args: argparse.Namespace) -> int:
    if args.list:
        _list()
        return 0
    if not args.name:
        raise DownloadError("NAME is required (see `netdissect download --list`)")
    if not args.to:
        raise DownloadError("--to DIR is required: the folder to download into")
    if not (args.timeout > 0 and args.timeout != float("inf")):  # (nan fails both)
        raise DownloadError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    common = dict(url=args.url, sha256=args.sha256, size=args.size, progress=not args.quiet, timeout=args.timeout)
    asset = ASSETS.get(args.name)
    is_dataset = (asset.kind == "dataset") if asset else (
        os.path.isdir(args.name) or args.name.lower().split("?")[0].endswith(".zip"))
    if is_dataset:
        path = fetch_dataset(args.name, args.to, keep_zip=args.keep_zip, **common)
    else:
        path = fetch_weights(args.name, args.to, **common)
    print(path)
    return 0

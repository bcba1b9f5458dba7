"""``netdissect dissect``: label the units of one or more layers."""
from __future__ import annotations

import argparse
import os

from netdissect.cli._common import add_model_args, add_token_args


def _size(text: str) -> int:
    """``256M``, ``1G``, ``64k`` (binary units) or a bare number of megabytes -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(float(t) * (1 << 20))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 256M, 1G or 64k, got {text!r}") from None


def _pair(text: str):
    try:
        v = [int(t) for t in text.split(",")]
    except ValueError:
        v = []
    if len(v) not in (1, 2) or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected N or H,W (positive integers), got {text!r}")
    return v[0] if len(v) == 1 else tuple(v)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "dissect",
        help="dissect layers of a model on a Broden-format dataset, an image folder, or a generator's samples",
        description="Score every unit of each --layer as a segmenter of every concept of --dataset's masks, "
        "or of the labels --segmenter gives the --images, or (a generator) of the labels --segmenter gives "
        "the images generated from --samples latent vectors (IoU of its top-quantile activation region), "
        "and write the run directory --out.",
        epilog="examples: netdissect dissect --model torchvision:resnet18 --weights DEFAULT "
        "--layer layer3 --layer layer4 --dataset broden1_224 --out runs/r18   |   "
        "netdissect dissect --model zoo:world-gan --layer layer4 --layer layer6 --samples 5000 --seed 1 "
        "--segmenter zoo:world-seg --out runs/gan   "
        "(on several processes or machines: torchrun --nproc_per_node N -m netdissect dissect ...)",
    )
    add_model_args(p)
    for action in p._actions:  # --seed and --normalize also mean something for a generator
        if action.dest == "seed":
            action.help = ("seed of random initialisation (--weights none, a factory's own init), so two runs "
                           "build the same network; with --samples also the seed of the latent draw (z = "
                           "numpy RandomState(SEED).standard_normal((SAMPLES, z_dim)), as in PNAS 2020) unless "
                           "--latent-seed is given; recorded in summary.json (default 0)")
        elif action.dest == "normalize":
            action.help += ("; for a generator (--samples) how its OUTPUT is normalised: RGB = clamp(out * STD + "
                            "MEAN, 0, 1); default 0.5,0.5 (outputs in [-1, 1]), none: outputs already in [0, 1]")
    p.add_argument("--layer", action="append", required=True, metavar="NAME",
                   help="dotted submodule name (repeat for several layers; they share one forward pass)")
    add_token_args(p)
    p.add_argument("--dataset", default=None, help="Broden-format dataset folder")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="instead of --dataset: a folder of images (recursive; jpg/png/webp) labelled by --segmenter")
    p.add_argument("--samples", type=int, default=None, metavar="N",
                   help="instead of --dataset/--images, for a generator (proggan:PATH, zoo:world-gan, ...): N latent "
                   "samples, z drawn with --seed; the generated images are labelled by --segmenter in the same "
                   "forward pass (never written as files) and the units' top images saved under --out/images")
    p.add_argument("--latent-seed", type=int, default=None, metavar="S",
                   help="with --samples: the seed of the latent draw when it must differ from --seed")
    p.add_argument("--z-dim", type=int, default=None, metavar="N",
                   help="with --samples: the latent size of a generator that does not say it (a z_dim attribute)")
    p.add_argument("--segmenter", default=None, metavar="SPEC",
                   help="labels from a segmentation model: color, zoo:world-seg, hf:PATH, file.py:factory, A+B "
                   "(`netdissect segmenters` lists them)")
    p.add_argument("--iou", choices=["broden", "pnas"], default=None,
                   help="broden (CVPR 2017; default with --dataset) or pnas (PNAS 2020: thresholds over the "
                   "upsampled maps, pooled counts; default with --segmenter, so with --samples)")
    p.add_argument("--seg-size", type=_pair, default=None, metavar="N|H,W",
                   help="label size of the segmenter (default: the image size / 4; for a generator's outputs "
                   "the output size / 4 but at least 32, e.g. 64 px -> 32, 256 px -> 64)")
    p.add_argument("--label-cache", default=None, metavar="DIR",
                   help="label cache folder (default: the user's cache folder, netdissect/labels)")
    p.add_argument("--quad-parts", action="store_true",
                   help="add <object>-top/-bottom/-left/-right parts of every object component")
    p.add_argument("--size", type=int, default=None,
                   help="resize the images to SIZE x SIZE before the model (--images: default the first image's "
                   "size; --dataset: the whole image, masks keep their size, e.g. 224 for a ViT on broden1_227)")
    p.add_argument("--crop", action="store_true", help="--images with --size: shorter side to SIZE, then the centre "
                   "square")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--quantile", type=float, default=None,
                   help="top quantile q of each unit's threshold (default 0.005; 0.01 with --iou pnas)")
    p.add_argument("--iou-threshold", type=float, default=0.04, help="detector when best IoU exceeds this (default 0.04)")
    p.add_argument("--auroc-threshold", type=float, default=0.9,
                   help="image-level layers (no spatial map: fc, pooled, NAME:cls): detector when the label's "
                        "AUROC >= this and its q-value < --fdr (default 0.9; docs/label-trust.md)")
    p.add_argument("--topk", type=int, default=10, help="top images kept per unit (default 10)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading processes (default: min(4, cores); latent samples use none)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (under torchrun: cuda:LOCAL_RANK), cuda:1, ...")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="forward pass in fp32 (default) or bf16 autocast (faster; labels agree closely, not exactly)")
    p.add_argument("--chunk", default=None, metavar="I/N",
                   help="only pass 1 on the I-th of N slices of the rows, into --out; "
                   "`netdissect merge` combines the N chunk folders into the run")
    p.add_argument("--cache-dtype", choices=["float32", "float16"], default="float32",
                   help="dtype of the on-disk activation cache: float32 (default, exact) or float16 (half the "
                   "disk; lossy: rounding ties values at the thresholds, counted in summary.json)")
    p.add_argument("--quantile-memory", type=_size, default=256 << 20, metavar="SIZE",
                   help="memory for each layer's exact threshold statistic, e.g. 256M (the default), 1G, 64k; "
                   "beyond it the thresholds stay exact through extra reads of the activation cache")
    p.add_argument("--split", default=None, help="only rows of this split (train/val)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip rows with missing/corrupt image or mask files (counted in summary.json); "
                   "the forward pass then also reads each row's masks, so a skipped row enters no statistic")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS")
    from netdissect.cli.score import add_scorecard_options

    add_scorecard_options(p)
    p.add_argument("--no-scorecard", action="store_true",
                   help="skip the label scorecard (significance, stability, held-out prediction; docs/label-trust.md)")
    p.add_argument("--keep-cache", action="store_true",
                   help="keep the activation cache in OUT/cache (for `netdissect score OUT`; it takes disk)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from netdissect.runfolder import RunLock, check_out

    check_out(args.out)
    # the report is written after dissect() returns: the lock covers both (the engine re-takes it)
    with RunLock(args.out, rank=int(os.environ.get("RANK", "0"))):
        return _run(args)


def _run(args) -> int:
    from netdissect.dissection import dissect

    result = dissect(
        args.model, args.layer, args.dataset, images=args.images, segmenter=args.segmenter, iou=args.iou,
        seg_size=args.seg_size, label_cache=args.label_cache, quad_parts=args.quad_parts, size=args.size,
        crop=args.crop, out=args.out, weights=args.weights, normalize=args.normalize,
        quantile=args.quantile, iou_threshold=args.iou_threshold, topk=args.topk, batch_size=args.batch_size,
        num_workers=args.workers, cache_dtype=args.cache_dtype, device=args.device, precision=args.precision,
        skip_bad=args.skip_bad, split=args.split, limit=args.limit, resume=args.resume, progress=not args.quiet,
        checkpoint_every=args.checkpoint_every, chunk=args.chunk, quantile_memory=args.quantile_memory,
        seed=args.seed, samples=args.samples, latent_seed=args.latent_seed, z_dim=args.z_dim,
        prefix_tokens=args.prefix_tokens, layouts=dict(args.layout or []),
        scorecard=False if args.no_scorecard else None, fdr=args.fdr, holdout=args.holdout, scorecard_seed=args.scorecard_seed,
        keep_cache=args.keep_cache, auroc_threshold=args.auroc_threshold,
    )
    if args.chunk is not None:
        print(f"chunk {args.chunk}: pass 1 done in {args.out}; once every chunk is done: "
              f"netdissect merge CHUNK_FOLDERS... --out RUN")
        return 0
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports and writes
    print(result.table())
    if result.summary.get("scorecard", {}).get("computed"):
        from netdissect.trust.rescore import absent_note
        from netdissect.trust.scorecard import layer_summary_line

        for name, lr in result.items():
            if lr.scorecard_summary is not None:
                print(f"{name} scorecard: {layer_summary_line(lr.scorecard_summary)}")
        for line in absent_note(result):
            print(f"netdissect dissect: {line}")
    skipped = result.summary["dataset"]["skipped"]
    if skipped:
        print(f"skipped {len(skipped)} bad row(s); see {args.out}/summary.json")
    if not args.no_report:
        try:
            from netdissect.report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            from netdissect.cli.report import one_line_warnings

            with one_line_warnings("dissect"):
                path = write_report(args.out)
            print(f"report: {path}")
    print(f"results: {args.out}")
    return 0

"""``netdissect paint --model zoo:world-gan --run runs/gan``: a local web app that paints with units.

    $ netdissect paint --model zoo:world-gan --run runs/gan
    netdissect paint: layer4, 12 concepts; open http://127.0.0.1:8000/

The palette comes from the run (concepts with at least ``--min-units`` units above the run's IoU
threshold at the layer); ``docs/paint.md`` describes the app and its API.
"""
from __future__ import annotations

import argparse
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _port(text: str) -> int:
    try:
        p = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is a whole number") from None
    if not 0 <= p <= 65535:
        raise argparse.ArgumentTypeError(f"{text}: a port is 0..65535 (0: any free port)")
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "paint", help="a local web app: paint a generator's images with the concepts of its units",
        description="Serve a local web app (GANPaint, PNAS 2020 Fig. 6): pick a generated sample, choose a "
                    "concept from the palette of a dissection run and draw or erase it; the units that "
                    "detect it are switched on (or off) under the brush at the layer.")
    p.add_argument("--model", required=True,
                   help="the generator: zoo:world-gan | proggan:PATH | path/to/file.py:factory | "
                        "package.module:factory")
    p.add_argument("--weights", default=None, help="a PATH of weights to load into it (zoo: the bundled ones)")
    p.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="a run of `netdissect dissect` on this generator (its palette)")
    p.add_argument("--layer", default=None, help="the layer to paint (default: the run's layer, if it has one)")
    p.add_argument("--min-units", type=int, default=2,
                   help="a concept enters the palette with this many detectors (units above the run's IoU "
                        "threshold) at the layer (default 2)")
    p.add_argument("--max-units", type=int, default=20,
                   help="a concept's units: its N units of highest IoU (its detectors first), the most one "
                        "stroke switches (default 20, as the PNAS paint app)")
    p.add_argument("--normalize", default=None,
                   help="how the generator's outputs are normalised, as for dissect (default 0.5,0.5: "
                        "[-1, 1] -> RGB (y + 1) / 2; none: already RGB in [0, 1])")
    p.add_argument("--z-dim", type=int, default=None,
                   help="the latent size, for a generator without a z_dim attribute")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per render (default 1; 0: torch's default)")
    p.add_argument("--drawing", choices=["measure", "skip"], default="measure",
                   help="measure at start which concepts the default stroke measurably draws, with the run's "
                        "segmenter (cached per weights, layer and settings; default), or skip it (docs/paint.md)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; anything else warns)")
    p.add_argument("--port", type=_port, default=8000, help="port (default 8000)")
    return p


def _check_port(host: str, port: int) -> None:
    """Refuse, before printing the address, a port another program listens on (uvicorn would print its
    own error and exit with code 3): one line, exit code 1."""
    import errno
    import socket

    from netdissect.errors import NetDissectError

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetDissectError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            s.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise NetDissectError(f"port {port} on {host} is in use (another server, or a paint app already "
                                      "running): choose another --port") from None
            raise NetDissectError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --host or "
                                  "--port") from None


def build(args):
    """``(app, painter, layer)`` for the parsed arguments (the server is not started)."""
    import warnings

    from netdissect.app.painter import Painter, PaintError
    from netdissect.app.palette import load_palette
    from netdissect.app.server import create_app
    from netdissect.errors import NetDissectError
    from netdissect.models import load_model
    from netdissect.models.loading import NoNormalizationWarning

    if args.min_units < 1:
        raise NetDissectError(f"--min-units {args.min_units}: give 1 or more")
    if args.threads < 0:
        raise NetDissectError(f"--threads {args.threads}: give 0 (torch's default) or more")
    if not 1 <= args.max_units <= 1000:
        raise NetDissectError(f"--max-units {args.max_units}: give 1..1000")
    layer, palette, result = load_palette(args.run, args.layer, args.min_units, args.max_units)
    ran = result.summary.get("model", {}).get("spec") if isinstance(result.summary.get("model"), dict) else None
    if ran and ran != args.model:
        print(f"netdissect paint: warning: {args.run} dissected {ran}, not {args.model}: its palette names "
              "units of that model", file=sys.stderr)
    with warnings.catch_warnings():
        if args.normalize is None:   # the generators' default, [-1, 1] outputs, as dissect assumes
            warnings.simplefilter("ignore", NoNormalizationWarning)
        model, gen_io = load_model(args.model, args.weights, args.normalize, generator=True, z_dim=args.z_dim)
    z_dim = gen_io.z_dim
    made = result.summary.get("model", {}).get("sha256") if isinstance(result.summary.get("model"), dict) else None
    if made:
        from netdissect.models import model_identity

        ours = model_identity(model)
        if ours != made:
            raise NetDissectError(f"--model {args.model} has weights digest {ours}, but {args.run} dissected weights "
                                  f"of digest {made}: the palette would switch units chosen on other weights (was "
                                  "the file changed?); dissect this generator again, or paint the one it dissected")
    try:
        painter = Painter(model, layer, palette, z_dim=z_dim, max_units=args.max_units, to_image=gen_io.to_image,
                          threads=args.threads or None)
    except PaintError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:
        raise NetDissectError(f"--model {args.model} with z of size {z_dim}: the generator failed "
                              f"({type(exc).__name__}: {exc}); is it the model the run dissected?") from None
    painter.drawing = _measure_drawing(args, painter, result, layer) if args.drawing == "measure" else None
    local = args.host in LOOPBACK
    hosts = ["127.0.0.1", "localhost", "[::1]"] if local else None
    app = create_app(painter, run=str(args.run), model=str(args.model), allowed_hosts=hosts)
    return app, painter, layer


def _measure_drawing(args, painter, result, layer):
    """Which palette concepts the default stroke draws (:mod:`netdissect.app.drawing`), with the run's segmenter;
    ``None`` (said in one line) when the run names no segmenter."""
    from netdissect.app.drawing import DRAW_SAMPLES, DRAW_SEED, measure_drawing
    from netdissect.concepts.segmenter import segmenter_identity
    from netdissect.segment import load_segmenter

    summary = result.summary
    labels = summary.get("labels") if isinstance(summary.get("labels"), dict) else {}
    if not labels.get("spec"):
        print(f"netdissect paint: {args.run} names no segmenter (summary.json labels.spec): the palette does not "
              "say which concepts draw (--drawing skip hides this line)", file=sys.stderr)
        return None
    seg_id = labels.get("segmenter") if isinstance(labels.get("segmenter"), dict) else {}
    seg = load_segmenter(labels["spec"], quad_parts=seg_id.get("kind") == "quad-parts")
    if seg_id and segmenter_identity(seg) != seg_id:
        print(f"netdissect paint: warning: segmenter {labels['spec']} is not the one {args.run} used; "
              "measuring which concepts draw with it anyway", file=sys.stderr)
    lr = result[layer]
    cols = {(str(n), str(c)): int(k) for n, c, k in zip(lr.concept_names, lr.concept_categories,
                                                         lr.concept_numbers)}
    numbers = {c.name: cols[(c.name, c.category)] for c in painter.palette.values()
               if (c.name, c.category) in cols}
    data = summary.get("dataset") if isinstance(summary.get("dataset"), dict) else {}
    seed = DRAW_SEED + 1 if data.get("seed") == DRAW_SEED else DRAW_SEED   # not the samples that chose the units
    print(f"netdissect paint: measuring which of the {len(numbers)} concepts the default stroke draws "
          f"({DRAW_SAMPLES} latents of seed {seed}) ...", file=sys.stderr, flush=True)
    out = measure_drawing(painter, seg, numbers, samples=DRAW_SAMPLES, seed=seed, seg_size=labels.get("seg_size"))
    for name, row in out["concepts"].items():
        painter.palette[name].drawing = row
    n = sum(r["draws"] for r in out["concepts"].values())
    how = f"from the cache {out['cache']}" if out["cached"] else f"in {out['seconds']} s"
    print(f"netdissect paint: {n} of {len(out['concepts'])} concepts measurably draw ({how})", file=sys.stderr)
    return out


def run(args) -> int:
    import uvicorn

    _check_port(args.host, args.port)  # before loading and measuring (seconds) a busy port is refused
    app, painter, layer = build(args)
    if args.host not in LOOPBACK:
        print(f"netdissect paint: warning: binding {args.host}: the app is reachable from other machines "
              "and has no authentication; use the default 127.0.0.1 unless you mean it", file=sys.stderr)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"netdissect paint: {layer}, {len(painter.palette)} concepts; open http://{host}:{args.port}/",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0

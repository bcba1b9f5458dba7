"""``netdissect explain RUN``: the best formula of concepts for every unit of a dissected layer.

    >>> from netdissect.explain import explain
    >>> explain("runs/r18", layers=["layer4"], length=3)        # doctest: +SKIP

What it reads: the run's thresholds (``LAYER/thresholds.npy``), the layer's activations and the
dataset's label planes.  A finished run keeps no activation cache, so the first ``explain`` of a
layer runs the model once more over the dataset (pass 1 only, as ``dissect --chunk 0/1`` does)
into ``RUN/.explain/acts-LAYER/`` and checks that it is the run's model and dataset; later calls
reuse it.  Then one sweep over labels and activations counts every unit's mask per signature
(:mod:`.data`; kept in ``RUN/.explain/LAYER.counts.npz``), and each unit is searched
(:mod:`.search`), with a checkpoint of the finished units (``RUN/.explain/LAYER.<method>.npz``)
so that a killed job resumes without redoing them.  Writes ``LAYER/formulas.csv`` (exact) or
``LAYER/formulas-beamW.csv`` (beam), atomically, and ``LAYER/formulas.json`` (settings, timing).
"""
from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from netdissect.atomic import savez as atomic_savez
from netdissect.atomic import write_bytes as atomic_write_bytes
from netdissect.errors import NetDissectError
from netdissect.explain.formula import Formula
from netdissect.explain.search import Problem, search_beam, search_exact

WORK = ".explain"
COLUMNS = ["unit", "formula", "iou", "iou_single_best", "length", "certified", "nodes_searched", "method", "p", "q",
           "significant"]
COUNTS_VERSION = 3  # 2: masks from the exact float64 thresholds; 3: categories held as a bool matrix (any number)


class ExplainError(NetDissectError):
    """A run that cannot be explained as asked (no labels, no activations, bad options)."""


def csv_name(search: str, beam: int) -> str:
    return "formulas.csv" if search == "exact" else f"formulas-beam{beam}.csv"


def formula_count(K: int, length: int) -> float:
    """Left-deep formulas of exactly ``length`` concepts over K: K (3K)^(length-1)."""
    return float(K) * (3.0 * K) ** (length - 1)


# ------------------------------------------------------------------------------------------ inputs
def _layer_of(res, run_dir: Path, layer: str | None) -> str:
    maps = [name for name in res if getattr(res[name], "method", None) != "image-level"]
    if layer is None:
        if len(maps) != 1:
            raise ExplainError(f"{run_dir} has layers {', '.join(maps) or 'none'} with a spatial map: "
                               + ("choose one with --layer" if maps else "formulas are for map layers"))
        return maps[0]
    if layer not in res:
        raise ExplainError(f"{run_dir} has no layer {layer!r} (it has {', '.join(res) or 'none'})")
    if layer not in maps:
        raise ExplainError(f"{run_dir}: layer {layer!r} is labelled image-level (no spatial map); formulas are "
                           f"pooled over pixels and are for map layers ({', '.join(maps) or 'none in this run'})")
    return layer


def _source(summary: dict, run_dir: Path):
    """(probe, concept source) of the run: the Broden-format dataset's images and masks (pooled for a
    PNAS-mode run), or, for a segmenter or generator run, the label planes that ``dissect --keep-cache``
    kept in ``RUN/cache/labels`` (read back as :func:`netdissect.dissection.chunks.recorded_source` does
    for ``netdissect score``; no segmenter runs)."""
    from netdissect.concepts import BrodenMasks
    from netdissect.data import Broden
    from netdissect.probe import BrodenImages

    labels = summary.get("labels") or {}
    data = summary.get("dataset") or {}
    if labels.get("kind") not in (None, "broden"):
        return _kept_labels(summary, run_dir, labels)
    path = data.get("path")
    if not path or not Path(path).is_dir():
        raise ExplainError(f"{run_dir}: the run's label planes come from the dataset {path}, which is not there: "
                           "put the dataset back at that path (explain reads its masks), or dissect again "
                           "with --dataset pointing at its new place")
    cfg = summary.get("config") or {}
    ds = Broden(path, split=cfg.get("split"), limit=cfg.get("limit"))
    source = BrodenMasks(ds)
    if labels.get("iou") == "pnas":
        from netdissect.concepts.segmenter import PooledLabels

        source = PooledLabels(source)
    # the rows as the run's model saw them (--size and the model's recorded interpolation)
    return BrodenImages(ds, size=data.get("resize"), interpolation=data.get("resample")), source


def _rerun(summary: dict, run_dir: Path) -> str:
    """The dissection to rerun for explain: the run's own command (netdissect score's) with --keep-cache."""
    from netdissect.trust.rescore import rerun_command

    cmd = rerun_command(summary, run_dir)
    return cmd.replace(f" --out {run_dir}-scored", f" --keep-cache --out {run_dir}")


def _kept_labels(summary: dict, run_dir: Path, labels: dict):
    """(probe, source) of a segmenter or generator run from the labels its kept cache holds, or the refusal
    naming the dissection to rerun."""
    from netdissect.dissection.engine import CACHE_DIR

    info_path = run_dir / CACHE_DIR / "cache.json"
    try:
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    except (OSError, ValueError):
        info = {}
    if "segmenter" not in info or not (run_dir / CACHE_DIR / "labels").is_dir():
        cmd = _rerun(summary, run_dir)
        raise ExplainError(f"{run_dir}: its labels come from a {labels.get('kind')} ({labels.get('spec', '')}) and the "
                           f"run kept no copy of them ({run_dir / CACHE_DIR / 'labels'}), so explain cannot sweep "
                           f"every pixel's labels again without running the segmenter: dissect again with "
                           f"--keep-cache, e.g. {cmd}, then explain")
    from netdissect.dissection.chunks import recorded_source

    try:
        return recorded_source(summary["identity"], info, run_dir / CACHE_DIR / "labels")
    except (NetDissectError, OSError, KeyError, TypeError, ValueError) as exc:
        raise ExplainError(f"{run_dir / CACHE_DIR / 'labels'}: the labels the run kept cannot be read back ({exc}): "
                           "dissect the run again with --keep-cache, then explain") from None


def _kept_cache(run_dir: Path, summary: dict, layer: str, progress: bool):
    """(RunState over ``RUN/cache`` that ``dissect --keep-cache`` kept, exact float64 thresholds), or
    None when the run kept no cache of ``layer``.  The thresholds are computed again from these
    activations and must round to the run's ``thresholds.npy`` (a cache left from another dissection
    into the same folder does not)."""
    from netdissect.dissection.config import DissectConfig
    from netdissect.dissection.engine import CACHE_DIR
    from netdissect.dissection.state import RunState

    info_path = run_dir / CACHE_DIR / "cache.json"
    if not info_path.exists():
        return None
    try:
        info = json.loads(info_path.read_text())
        lo, hi = (int(v) for v in info["rows"])
        li = info["layers"].get(layer)
        shape = tuple(int(v) for v in li["shape"]) if li else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ExplainError(f"{info_path}: unreadable ({exc}): remove {run_dir / CACHE_DIR} (explain then runs the "
                           "model again) or dissect the run again with --keep-cache") from None
    if li is None or not (run_dir / CACHE_DIR / li["file"]).exists():
        return None
    probe, source = _source(summary, run_dir)
    ident = summary.get("identity") or {}
    conf = dict(ident.get("config") or {})
    conf["cache_dtype"] = info.get("dtype", conf.get("cache_dtype", "float32"))
    cfg = DissectConfig(**conf, device="cpu", num_workers=0)
    pnas = (ident.get("labels") or summary.get("labels") or {}).get("iou") == "pnas"
    if (lo, hi) != (0, len(probe)):
        raise ExplainError(f"{info_path}: the kept cache holds rows {lo}..{hi} of a dataset of {len(probe)} images "
                           f"(the dataset changed since the run): remove {run_dir / CACHE_DIR} and run explain again")
    st = RunState([layer], probe, source, cfg, run_dir / CACHE_DIR, (lo, hi), layer_thresholds=not pnas)
    if st.cache_path(layer).name != li["file"]:
        return None
    if progress:
        print(f"netdissect explain: reading the activations of {layer!r} that `dissect --keep-cache` kept in "
              f"{run_dir / CACHE_DIR} (no second pass over the model)", file=sys.stderr)
    try:
        st.allocate(layer, shape, existing=True)
        st.skipped = {int(i): "skipped by the run" for i in info.get("skipped", [])}
        if not pnas:
            st.feed_cache(layer, st.quantiles[layer])
    except (NetDissectError, OSError, ValueError) as exc:
        st.close()
        raise ExplainError(f"{run_dir / CACHE_DIR}: the kept activation cache cannot be read ({exc}): remove that "
                           "folder (explain then runs the model again) or dissect the run again") from None
    return st, _thresholds_of(st, layer, pnas, run_dir, run_dir / CACHE_DIR)


def _activations(run_dir: Path, summary: dict, layer: str, progress: bool):
    """(RunState holding the layer's activation cache, exact float64 thresholds): the cache that
    ``dissect --keep-cache`` kept in ``RUN/cache`` when there, else ``RUN/.explain/acts-LAYER``,
    made by running the run's model once more when missing."""
    from netdissect.runfolder import read_chunk_info

    kept = _kept_cache(run_dir, summary, layer, progress)
    if kept is not None:
        return kept
    folder = run_dir / WORK / f"acts-{layer.replace('/', '_')}"
    want = (summary.get("identity") or {})
    if (folder / "chunk.json").exists():
        try:
            ident = read_chunk_info(folder)["identity"]
        except (NetDissectError, KeyError, TypeError):
            ident = None
        stale = [p for p in ("model", "dataset") if p in want and (ident is None or ident.get(p) != want[p])]
        q = (want.get("config") or {}).get("quantile")
        if ident is not None and q is not None and (ident.get("config") or {}).get("quantile") != q:
            stale.append("quantile")
        if stale:  # the run was dissected again since: these activations are another model's or dataset's
            import shutil

            print(f"netdissect explain: {folder} holds activations of another {' and '.join(stale)} than the run's "
                  "(it was dissected again since): removing them and computing them again", file=sys.stderr)
            shutil.rmtree(folder)
    if (summary.get("labels") or {}).get("kind") not in (None, "broden"):
        cmd = _rerun(summary, run_dir)
        raise ExplainError(f"{run_dir}: explain reads a segmenter run's activations of {layer!r} from the cache that "
                           f"`dissect --keep-cache` keeps, and {run_dir / 'cache'} holds none of them: dissect again "
                           f"with --keep-cache, e.g. {cmd}, then explain")
    model = summary.get("model") or {}
    cfg = summary.get("config") or {}
    data = summary.get("dataset") or {}
    rerun = (f"explain needs the activations of {layer!r}, which a finished dissection does not keep, and "
             f"builds them by running the run's model again")
    if not (folder / "chunk.json").exists():
        spec = model.get("spec")
        if not spec or str(spec).startswith("python:") or ":" not in str(spec):
            raise ExplainError(f"{run_dir}: {rerun}, but the run names no model spec that can be loaded "
                               f"({spec!r}: the run was made from a Python module object): dissect again from a "
                               f"spec, e.g. `netdissect dissect --model file.py:factory --layer {layer} --dataset "
                               f"{data.get('path')} --out {run_dir}`, then explain")
        from netdissect import dissect

        if progress:
            print(f"netdissect explain: {rerun} (pass 1 only, kept in {folder} for later explains)",
                  file=sys.stderr)
        kw = {"weights": model.get("weights"), "seed": model.get("seed", 0)}
        norm = model.get("normalize")
        try:
            dissect(spec, [layer], data["path"], out=folder, chunk=(0, 1), normalize=norm, quantile=cfg.get("quantile"),
                    batch_size=cfg.get("batch_size", 64), cache_dtype=cfg.get("cache_dtype", "float32"),
                    split=cfg.get("split"), limit=cfg.get("limit"), skip_bad=bool(cfg.get("skip_bad")),
                    precision=(summary.get("precision") or {}).get("used", "fp32"), resume=(folder / ".work").exists(),
                    progress=progress, iou=(summary.get("labels") or {}).get("iou"), size=data.get("resize"),
                    prefix_tokens=(summary.get("identity") or {}).get("prefix_tokens"), **kw)
        except NetDissectError as exc:
            raise ExplainError(f"{run_dir}: {rerun}, which failed: {exc}") from None
    info = read_chunk_info(folder)
    for part in ("model", "dataset"):
        if part in want and info["identity"].get(part) != want[part]:
            raise ExplainError(f"{folder}: its activations come from another {part} than the run's (the model's "
                               "weights or the dataset changed since the run): remove that folder and dissect the "
                               "run again")
    return _exact_thresholds(folder, info, summary, layer, run_dir)


def _exact_thresholds(folder: Path, info: dict, summary: dict, layer: str, run_dir: Path):
    """(the RunState of the activations folder, its cache of ``layer``, the thresholds in float64).

    thresholds.npy holds float32, but dissection masks with the float64 threshold (an interpolation
    between two activation values that may round onto one of them), so the thresholds are computed
    again from the activations, exactly as dissection does, and checked against the file."""
    from netdissect.dissection.config import DissectConfig
    from netdissect.dissection.state import RunState

    probe, source = _source(summary, run_dir)
    ident = info["identity"]
    cfg = DissectConfig(**ident["config"], device="cpu", num_workers=0)
    pnas = (ident.get("labels") or {}).get("iou") == "pnas"
    st = RunState([layer], probe, source, cfg, folder / ".work", tuple(info["rows"]),
                  layer_thresholds=not pnas)
    try:
        st.load_checkpoint()
    except NetDissectError as exc:
        raise ExplainError(f"{exc} (explain: remove {folder} and run explain again to rebuild it)") from None
    return st, _thresholds_of(st, layer, pnas, run_dir, folder)


def _thresholds_of(st, layer: str, pnas: bool, run_dir: Path, folder: Path) -> np.ndarray:
    """The layer's float64 thresholds from the activations of ``st`` (its quantile statistic fed with
    the first pass), checked against the run's thresholds.npy (closes ``st`` when they differ)."""
    from netdissect.dissection.distributed import Group

    if pnas:
        from netdissect.dissection.pnas import pnas_thresholds

        thr = pnas_thresholds(st, layer, Group(device="cpu"), parts=[st])
    else:
        stat = st.quantiles[layer]
        while not stat.exact:
            stat = stat.refinement()
            st.feed_cache(layer, stat)
        thr = stat.threshold()
    thr = np.asarray(thr, np.float64)
    saved = np.load(run_dir / layer / "thresholds.npy")
    if not np.array_equal(thr.astype(np.float32), saved):
        st.close()
        raise ExplainError(f"{folder}: the activations computed again give other thresholds than the run's "
                           f"{run_dir / layer / 'thresholds.npy'} (the activations come from another dissection, or "
                           "another machine or library version computes them differently): remove that folder "
                           "and run explain again, or dissect the run again here, then explain")
    return thr


def _counts(run_dir: Path, summary: dict, layer: str, lr, progress: bool, batch_size: int, workers: int,
            device=None):
    """(member bool (K, S), n, pattern, H (C, S)) of the layer: from the counts file, or one sweep."""
    path = run_dir / WORK / f"{layer.replace('/', '_')}.counts.npz"
    key = json.dumps({"v": COUNTS_VERSION, "identity": summary.get("identity"),
                      "thresholds": lr.thresholds.astype(np.float64).tolist()}, sort_keys=True)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["member"], z["n"], z["pattern"], z["H"], float(z["seconds"])
        except Exception:  # noqa: BLE001 - a damaged counts file is recomputed
            pass
    from netdissect.explain.data import count_run

    _, source = _source(summary, run_dir)
    st, thresholds = _activations(run_dir, summary, layer, progress)
    skipped = {int(s["row"]) for s in (summary.get("dataset") or {}).get("skipped", [])} | set(st.skipped)
    try:
        sigs, H, seconds = count_run(source, st.caches[layer], st.shapes[layer], thresholds, skipped,
                                     batch_size=batch_size, workers=workers, progress=progress,
                                     device=device or "cpu")
    finally:
        st.close()
    member, n, pattern = sigs.member_matrix(), sigs.n, sigs.pattern_matrix()
    atomic_savez(path, key=np.asarray(key), member=member, n=n, pattern=pattern, H=H, seconds=np.float64(seconds))
    return member, n, pattern, H, seconds


# ------------------------------------------------------------------------------------------ output
def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow([r["unit"], r["formula"], f"{r['iou']:.6f}", f"{r['iou_single_best']:.6f}", r["length"],
                    int(r["certified"]), r["nodes_searched"], r["method"], _g(r.get("p")), _g(r.get("q")),
                    int(bool(r.get("significant")))])
    return buf.getvalue()


def _g(v) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _f(text) -> float:
    return float(text) if text not in (None, "") else float("nan")


class StaleFormulas(NetDissectError):
    """formulas.csv made from another dissection of the run than the one in its folder now."""


def layer_digest(lr) -> str:
    """What a layer's formulas depend on, as a digest: the run's thresholds and its labels (concept
    names and categories).  Recorded in formulas.json; a re-dissection changes it."""
    return hash_rows(np.asarray(lr.thresholds, np.float32), np.asarray(lr.concept_names).astype(str),
                     np.asarray(lr.concept_categories).astype(str))


def check_fresh(path, digest: str) -> None:
    """Raise :class:`StaleFormulas` unless ``formulas.json`` beside the formulas file ``path`` records
    ``digest`` for it (the layer's thresholds and labels when the formulas were made)."""
    path = Path(path)
    try:
        meta = json.loads((path.parent / "formulas.json").read_text()).get(path.name) or {}
    except (OSError, ValueError, AttributeError):
        meta = {}
    if meta.get("run_digest") != digest:
        why = ("records no digest of the run it was made from" if not meta.get("run_digest")
               else "was made before the run was dissected again (its thresholds or labels differ now)")
        raise StaleFormulas(f"{path} {why}: its formulas may not describe these units; run `netdissect explain "
                            f"{path.parent.parent} --layer {path.parent.name}` again")


def read_formulas(path, digest: str | None = None) -> np.ndarray | None:
    """``LAYER/formulas.csv`` as a structured array (fields :data:`COLUMNS`), None when absent.
    ``digest`` (:func:`layer_digest` of the layer now): refuse formulas made from another dissection."""
    path = Path(path)
    if not path.exists():
        return None
    if digest is not None:
        check_fresh(path, digest)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        w = max([1] + [len(r["formula"]) for r in rows])
        m = max([1] + [len(r["method"]) for r in rows])
        out = np.zeros(len(rows), dtype=[("unit", "i4"), ("formula", f"U{w}"), ("iou", "f8"),
                                         ("iou_single_best", "f8"), ("length", "i4"), ("certified", "?"),
                                         ("nodes_searched", "i8"), ("method", f"U{m}"), ("p", "f8"), ("q", "f8"),
                                         ("significant", "?")])
        for i, r in enumerate(rows):  # p, q, significant: NaN / False in files made before the scorecard
            out[i] = (int(r["unit"]), r["formula"], float(r["iou"]), float(r["iou_single_best"]), int(r["length"]),
                      r["certified"] == "1", int(r["nodes_searched"]), r["method"], _f(r.get("p")), _f(r.get("q")),
                      r.get("significant") == "1")
        return out
    except (KeyError, ValueError, TypeError) as exc:
        raise NetDissectError(f"{path}: malformed formulas file ({exc}); run `netdissect explain` again") from None


# ------------------------------------------------------------------------------------------ the command
def explain(run, layers=None, length: int = 3, search: str = "exact", beam: int = 10, categories=None,
            out=None, progress: bool = True, batch_size: int | None = None, workers: int = 0,
            checkpoint_every: float = 30.0, max_nodes: int | None = None, device: str | None = None,
            scorecard: bool = True, _stop_after: int | None = None) -> dict:
    """Label every unit of ``layers`` of the run with its best formula; returns layer -> rows (dicts).

    ``search``: ``"exact"`` (branch and bound, certified) or ``"beam"`` (Mu & Andreas, width ``beam``);
    ``categories``: consider only concepts whose primary category is one of these (default: all);
    ``out``: where ``LAYER/formulas.csv`` goes (default: the run folder); ``device`` (e.g. ``"cuda"``):
    count the masks and run the search's products there (torch), the same results as on the CPU;
    ``scorecard=False``: skip the formulas' significance sweep (p, q left empty)."""
    from netdissect.dissection import load
    from netdissect.runfolder import RunLock, check_out

    run_dir = Path(run)
    if search not in ("exact", "beam"):
        raise ExplainError(f"--search must be exact or beam, got {search!r}")
    if not isinstance(length, int) or length < 1:
        raise ExplainError(f"--length must be a whole number >= 1, got {length!r}")
    if search == "beam" and beam < 1:
        raise ExplainError(f"--beam must be >= 1, got {beam}")
    if device is not None:
        from netdissect.dissection.distributed import resolve_device

        device = resolve_device(device)
    res = load(run_dir)
    summary = res.summary
    names = [layers] if isinstance(layers, str) or layers is None else list(layers)
    out_dir = check_out(out if out is not None else run_dir, flag="--out")
    work = check_out(run_dir / WORK, what="explain work folder")
    results = {}
    with RunLock(work, what="explain work folder"):
        for name in names:
            layer = _layer_of(res, run_dir, name)
            results[layer] = _explain_layer(run_dir, out_dir, summary, layer, res[layer], length, search, beam,
                                            categories, progress, batch_size or int(summary["config"].get("batch_size", 64)),
                                            workers, checkpoint_every, max_nodes, _stop_after, device, scorecard)
    return results


def _candidates(lr, categories) -> np.ndarray:
    cats = np.asarray(lr.concept_categories).astype(str)
    if categories is None:
        return np.arange(len(cats))
    want = [c.strip() for c in (categories.split(",") if isinstance(categories, str) else categories) if c.strip()]
    unknown = [c for c in want if c not in set(lr.categories)]
    if unknown or not want:
        raise ExplainError(f"--categories {','.join(want)}: the run's categories are {', '.join(lr.categories)}")
    return np.flatnonzero(np.isin(cats, want))


def _explain_layer(run_dir, out_dir, summary, layer, lr, length, search, beam, categories, progress, batch_size,
                   workers, checkpoint_every, max_nodes, stop_after, device=None, scorecard=True):
    from tqdm.auto import tqdm

    cols = _candidates(lr, categories)
    K = len(cols)
    if length > 5:
        print(f"netdissect explain: warning: --length {length} over {K} concepts spans {formula_count(K, length):.2g} "
              f"formulas per unit (K (3K)^(L-1)); the exact search visits a fraction of them, but its worst case "
              f"grows 3K = {3 * K}-fold per term: expect it to take far longer than --length 3 (the projection "
              "after the first units says how long)", file=sys.stderr)
    t0 = time.monotonic()
    member, n, pattern, H, count_s = _counts(run_dir, summary, layer, lr, progress, batch_size, workers, device)
    t_counts = time.monotonic() - t0
    prim_index = {g: i for i, g in enumerate(lr.categories)}
    primary = np.array([prim_index[str(c)] for c in lr.concept_categories], np.int64)
    problem = Problem(member[cols], n, pattern, primary[cols], device=None if device in (None, "cpu") else device)
    cname = np.asarray(lr.concept_names).astype(str)[cols]
    method = "exact" if search == "exact" else f"beam{beam}"
    C = H.shape[0]
    ck_path = run_dir / WORK / f"{layer.replace('/', '_')}.{method}-L{length}.npz"
    ck_key = json.dumps({"counts": hash_rows(member, n, H), "cols": cols.tolist(), "length": length,
                         "max_nodes": max_nodes}, sort_keys=True)
    state = {"done": np.zeros(C, bool), "formula": np.full(C, "", dtype=object), "iou": np.zeros(C),
             "single": np.zeros(C), "length": np.zeros(C, np.int64), "certified": np.zeros(C, bool),
             "nodes": np.zeros(C, np.int64), "seconds": np.zeros(C)}
    if ck_path.exists():
        try:
            with np.load(ck_path, allow_pickle=False) as z:
                if str(z["key"]) == ck_key:
                    for k in state:
                        state[k] = z[k].astype(object) if k == "formula" else z[k]
        except Exception:  # noqa: BLE001 - a damaged checkpoint: start the units afresh
            pass

    def save():
        arrays = {k: (v.astype(str) if k == "formula" else v) for k, v in state.items()}
        atomic_savez(ck_path, key=np.asarray(ck_key), **arrays)

    todo = [k for k in range(C) if not state["done"][k]]
    bar = tqdm(total=C, initial=C - len(todo), desc=f"explain {layer} ({method}, length {length})", unit="unit",
               disable=not progress, dynamic_ncols=True)
    last = time.monotonic()
    t_search = time.monotonic()
    try:
        for i, k in enumerate(todo):
            if stop_after is not None and i >= stop_after:  # tests: a job killed after some units
                raise KeyboardInterrupt
            t1 = time.monotonic()
            h = H[k]
            if h.sum() == 0:  # a dead unit: no mask, no label (as units.csv)
                f, iou, single, cert, nodes, L = "", 0.0, 0.0, True, 0, 0
            else:
                found = (search_exact(problem, h, length, max_nodes=max_nodes) if search == "exact"
                         else search_beam(problem, h, length, beam))
                iou, single, cert, nodes = found.iou, found.iou_single, found.certified, found.nodes
                f = found.formula.render(cname) if iou > 0 else ""
                L = len(found.formula) if iou > 0 else 0
            state["formula"][k], state["iou"][k], state["single"][k] = f, iou, single
            state["length"][k], state["certified"][k], state["nodes"][k] = L, cert, nodes
            state["seconds"][k] = time.monotonic() - t1
            state["done"][k] = True
            bar.update(1)
            if progress and i == min(15, len(todo) - 1) and len(todo) > 32:
                per = (time.monotonic() - t_search) / (i + 1)
                print(f"netdissect explain: about {per:.2f} s a unit, {per * (len(todo) - i - 1) / 60:.1f} min for the "
                      f"{len(todo) - i - 1} units left", file=sys.stderr)
            if time.monotonic() - last >= checkpoint_every:
                save()
                last = time.monotonic()
    except KeyboardInterrupt:  # Ctrl-C: the units finished so far are kept
        save()
        bar.close()
        raise
    bar.close()
    save()
    rows = [{"unit": k, "formula": state["formula"][k], "iou": float(state["iou"][k]),
             "iou_single_best": float(state["single"][k]), "length": int(state["length"][k]),
             "certified": bool(state["certified"][k]), "nodes_searched": int(state["nodes"][k]), "method": method}
            for k in range(C)]
    fdr = float((summary.get("scorecard") or {}).get("fdr", 0.05))
    if scorecard:
        p, q, null_s = _significance(run_dir, summary, layer, lr, cols, cname, primary, state["formula"], ck_key,
                                     progress, batch_size, workers, device)
    for k, r in enumerate(rows):
        tested = bool(r["formula"]) and scorecard
        r["p"], r["q"] = (float(p[k]), float(q[k])) if tested else (None, None)
        r["significant"] = tested and (fdr >= 1 or bool(q[k] < fdr))  # --fdr 1: the IoU rule alone, as for labels
    folder = Path(out_dir) / layer
    atomic_write_bytes(folder / csv_name(search, beam), _csv(rows).encode())
    meta = {"method": method, "length": length, "search": search, "beam": beam if search == "beam" else None,
            "concepts": int(K), "categories": sorted(set(np.asarray(lr.concept_categories).astype(str)[cols])),
            "signatures": int(member.shape[1]), "units": C, "certified_units": int(state["certified"].sum()),
            "seconds": {"counts": round(float(count_s), 3), "counts_this_call": round(t_counts, 3),
                        "search_total_unit_seconds": round(float(state["seconds"].sum()), 3)},
            "union_rule": "images holding a category of any concept of the formula (docs/compositional.md)",
            "significance": ({"fdr": fdr, "tests": int(sum(bool(r["formula"]) for r in rows)),
                              "significant": int(sum(r["significant"] for r in rows)), "seconds": round(null_s, 3),
                              "null": "image permutation within the formula's images (docs/compositional.md)"}
                             if scorecard else {"computed": False, "why": "--no-scorecard"}),
            "run_digest": layer_digest(lr)}
    mpath = folder / "formulas.json"
    try:
        old = json.loads(mpath.read_text()) if mpath.exists() else {}
    except (OSError, ValueError):
        old = {}
    old[csv_name(search, beam)] = meta
    atomic_write_bytes(mpath, json.dumps(old, indent=2).encode())
    return rows


_NULL_STOP_AFTER = None  # tests: kill the significance sweep after this many batches


def _significance(run_dir, summary, layer, lr, cols, cname, primary, formulas, ck_key, progress, batch_size, workers,
                  device):
    """(p, q, seconds): each unit's formula's permutation-null p and BH q over the layer's formulas
    (:mod:`.null`), from one more sweep over labels and activations; kept in RUN/.explain (keyed by the
    formulas) so that a finished explain does not sweep again."""
    from netdissect.explain.null import scorecard

    C = len(formulas)
    path = run_dir / WORK / f"{layer.replace('/', '_')}.null-{hash_rows(np.frombuffer(ck_key.encode(), np.uint8))[:12]}.npz"
    key = json.dumps({"ck": ck_key, "formulas": [str(f) for f in formulas]}, sort_keys=True)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return z["p"], z["q"], float(z["seconds"])
        except Exception:  # noqa: BLE001 - a damaged file is recomputed
            pass
    parsed = [parse_formula(str(f), cname) for f in formulas]
    tested = np.array([f is not None for f in parsed])
    if not tested.any():
        return np.ones(C), np.ones(C), 0.0
    src_formulas = [None if f is None else Formula(int(cols[f.first]), tuple((op, int(cols[c])) for op, c in f.rest))
                    for f in parsed]
    cat_bits = [0 if f is None else sum({1 << int(primary[c]) for c in f.concepts}) for f in src_formulas]
    from netdissect.explain.data import null_run

    t0 = time.monotonic()
    _, source = _source(summary, run_dir)
    st, thresholds = _activations(run_dir, summary, layer, progress)
    skipped = {int(s["row"]) for s in (summary.get("dataset") or {}).get("skipped", [])} | set(st.skipped)
    try:
        sums = null_run(source, st.caches[layer], st.shapes[layer], thresholds, src_formulas, skipped,
                        batch_size=batch_size or 64, workers=workers, progress=progress, device=device or "cpu",
                        checkpoint=path.with_name(path.stem + ".part.npz"), key=key,
                        _stop_after=_NULL_STOP_AFTER)
    finally:
        st.close()
    p, q = scorecard(sums, cat_bits, tested)
    seconds = time.monotonic() - t0
    atomic_savez(path, key=np.asarray(key), p=p, q=q, seconds=np.float64(seconds))
    return p, q, seconds


def hash_rows(*arrays) -> str:
    import hashlib

    d = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        d.update(str((a.shape, a.dtype.str)).encode())
        d.update(a.tobytes())
    return d.hexdigest()


def parse_formula(text: str, names) -> Formula | None:
    """The :class:`Formula` of a formulas.csv cell (None for an empty one)."""
    return Formula.parse(text, names) if text else None


__all__ = ["explain", "read_formulas", "parse_formula", "csv_name", "formula_count", "layer_digest", "ExplainError",
           "StaleFormulas"]

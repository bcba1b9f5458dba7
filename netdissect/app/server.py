"""The paint app's web server (FastAPI): the JSON API and the page's static files.

Routes (the schema is served at ``/openapi.json``; ``docs/paint.md`` describes them):

``GET /``                  the page (``static/index.html``)
``GET /static/{name}``     one of the files of the package's ``static`` folder, by exact name
``GET /api/info``          model, layer, grid, image size, value policy, limits
``GET /api/concepts``      the palette: ``[{"name", "category", "color", "units": [{"unit", "iou", "value"}]}]``
``GET /api/samples``       ``?first=S&count=N``: plain renders of seeds S..S+N-1 (one batched pass)
``POST /api/render``       ``{"seed", "strokes": [{"concept", "mode", "mask", "n_units"?, "strength"?}]}``
                           -> ``{"image": "data:image/png;base64,...", "edits": [...], ...}``

Every request body is validated against the schema (unknown fields are refused): a bad request
gets a 4xx JSON ``{"detail": "a message"}``, never a 500; a render that fails for another reason
answers 500 with a message and the server goes on serving.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from netdissect.app.painter import (DATA_URL, MAX_BATCH, MAX_MASK_BYTES, MAX_SEED, MAX_STROKES, PaintError,
                                    Painter, Stroke, decode_mask, png_data_url)

__all__ = ["create_app", "RenderRequest", "StrokeIn", "RenderResponse", "STATIC_DIR", "MAX_BODY_BYTES"]

STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
MASK_CHARS = len(DATA_URL) + 4 * ((MAX_MASK_BYTES + 2) // 3)
MAX_BODY_BYTES = MAX_STROKES * (MASK_CHARS + 512) + 4096
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
log = logging.getLogger("netdissect.app")

Seed = Annotated[int, Field(strict=True, ge=0, le=MAX_SEED, description=f"0..{MAX_SEED}; "
                            "z = numpy.random.RandomState(seed).standard_normal(z_dim)")]


class StrokeIn(BaseModel):
    """One painted stroke."""

    model_config = ConfigDict(extra="forbid")
    concept: str = Field(min_length=1, max_length=200, description="a name from GET /api/concepts")
    mode: Literal["draw", "erase"] = Field(description="draw: units set to strength x their insertion value; "
                                                       "erase: units set to 0")
    mask: str = Field(max_length=MASK_CHARS, pattern=r"^data:image/png;base64,",
                      description=f"a PNG data URL at the output image's size, nonzero where painted; "
                                  f"at most {MAX_MASK_BYTES} bytes of PNG")
    n_units: int | None = Field(default=None, strict=True, ge=1, le=1000,
                                description="use the concept's first n units (best IoU first); default: all "
                                            "its units (its max_units best, 20 by default)")
    strength: float = Field(default=1.0, ge=0.0, le=4.0,
                            description="draw strokes only: multiplies the units' insertion value "
                                        "(an erase stroke sets 0 and refuses a strength other than 1)")

    @model_validator(mode="after")
    def _strength_draw_only(self):
        if self.mode == "erase" and self.strength != 1.0:
            raise ValueError("strength applies to draw strokes only (erase sets the units to 0)")
        return self


class RenderRequest(BaseModel):
    """A sample and the strokes painted on it, in order."""

    model_config = ConfigDict(extra="forbid")
    seed: Seed
    strokes: list[StrokeIn] = Field(default_factory=list, max_length=MAX_STROKES)


class EditOut(BaseModel):
    stroke: int
    concept: str
    mode: str
    units: list[int]
    values: list[float] = Field(description="the value each unit was set to where painted")
    cells: list[list[int]] = Field(description="[row, col] cells of the layer's grid the stroke switched")


class RenderResponse(BaseModel):
    image: str = Field(description="data:image/png;base64,... at the output image's size")
    seed: int
    layer: str
    grid: list[int]
    edits: list[EditOut]
    forward_ms: float


class ErrorOut(BaseModel):
    detail: str = Field(description="what is wrong, in words")
    errors: list[dict] | None = Field(default=None, description="422 of the schema: [{where, message}]")


class Sample(BaseModel):
    seed: int
    image: str


class SamplesResponse(BaseModel):
    samples: list[Sample]


class UnitOut(BaseModel):
    unit: int
    iou: float
    detector: bool = Field(description="IoU above the run's threshold")
    value: float | None = Field(default=None, description="the insertion value (draw at strength 1)")


class DrawingOut(BaseModel):
    gain: float = Field(description="mean gain of the concept's share of the region's label pixels")
    se: float = Field(description="its standard error")
    ci99_low: float
    ci99_high: float
    before: float = Field(description="the concept's mean share of the region before the stroke")
    after: float = Field(description="... and after")
    samples: int
    draws: bool = Field(description="ci99_low at least the rule's min_gain (GET /api/info drawing)")


class ConceptOut(BaseModel):
    name: str
    category: str
    color: str
    detectors: int = Field(description="how many of the units (the first ones) are detectors of the concept")
    units: list[UnitOut] = Field(description="the concept's units of highest IoU, best first")
    drawing: DrawingOut | None = Field(default=None, description="whether the app's default stroke draws the "
                                       "concept (measured at start-up; absent when not measured)")


def _where(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(painter: Painter, *, run: str = "", model: str = "",
               allowed_hosts: list[str] | None = None) -> FastAPI:
    """The ASGI app around a :class:`~netdissect.app.painter.Painter` (serve it with uvicorn).

    ``allowed_hosts``: Host headers accepted (``None``: any); the CLI passes the loopback names
    when it binds 127.0.0.1, which shuts out DNS-rebinding pages.
    """
    app = FastAPI(title="netdissect paint", version="1",
                  description="Paint with the concepts of a generator's dissected units (PNAS 2020, Fig. 6). "
                              "See docs/paint.md.",
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    app.state.painter = painter
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file() and p.suffix in STATIC_TYPES}
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if hosts is not None:
            host = request.headers.get("host", "").lower()
            name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
            if name not in hosts:
                return JSONResponse({"detail": f"host {host!r} not served (bound to loopback only)"},
                                    status_code=421)
        length = request.headers.get("content-length")
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            # a body of unknown length (chunked) could be of any size: browsers always send the length
            return JSONResponse({"detail": "a request body needs a Content-Length header"}, status_code=411)
        if length is not None:
            try:
                too_big = int(length) > MAX_BODY_BYTES
            except ValueError:
                return JSONResponse({"detail": "malformed Content-Length"}, status_code=400)
            if too_big:
                return JSONResponse({"detail": f"request body of {length} bytes is larger than the limit of "
                                               f"{MAX_BODY_BYTES} bytes"}, status_code=413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = [{"where": _where(e.get("loc", ())), "message": str(e.get("msg", ""))} for e in exc.errors()]
        text = "; ".join(f"{e['where']}: {e['message']}" for e in errors[:5]) or "invalid request"
        return JSONResponse({"detail": text, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(static_files["index.html"], media_type=STATIC_TYPES[".html"])

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        path = static_files.get(name)   # exact names of the package folder's files: no path is ever built
        if path is None:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        return FileResponse(path, media_type=STATIC_TYPES[path.suffix])

    @app.get("/api/info")
    def info() -> dict:
        """What is painted: model, layer, grid, image size, the value policy and the request limits."""
        drawing = getattr(painter, "drawing", None)
        return {**painter.info(), "model": model, "run": run,
                "drawing": None if drawing is None else {k: v for k, v in drawing.items() if k != "concepts"},
                "limits": {"max_strokes": MAX_STROKES, "max_mask_bytes": MAX_MASK_BYTES, "max_seed": MAX_SEED,
                           "max_batch": MAX_BATCH, "max_body_bytes": MAX_BODY_BYTES}}

    @app.get("/api/concepts", response_model=list[ConceptOut])
    def concepts():
        """The palette: concepts with enough units above the run's IoU threshold at the layer."""
        return [c.as_json() for c in painter.palette.values()]

    @app.get("/api/samples", response_model=SamplesResponse)
    def samples(first: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
                count: Annotated[int, Query(ge=1, le=MAX_BATCH)] = 12):
        """Plain renders of seeds first .. first + count - 1, in one batched forward pass."""
        seeds = [s for s in range(first, first + count) if s <= MAX_SEED]
        imgs = _guarded(lambda: painter.samples(seeds))
        if isinstance(imgs, JSONResponse):
            return imgs
        return {"samples": [{"seed": s, "image": png_data_url(im)} for s, im in zip(seeds, imgs)]}

    @app.post("/api/render", response_model=RenderResponse,
              responses={413: {"model": ErrorOut, "description": "body too large"},
                         422: {"model": ErrorOut, "description": "invalid request (schema, mask, concept)"},
                         500: {"model": ErrorOut, "description": "the render failed (the server goes on)"}})
    def render(req: RenderRequest):
        """The seed's image with the strokes applied in order at the layer (``x <- x(1-a) + v a``)."""
        strokes = []
        for i, s in enumerate(req.strokes):
            try:
                mask = decode_mask(s.mask, painter.size, what=f"strokes.{i}.mask")
            except PaintError as exc:
                return JSONResponse({"detail": str(exc)}, status_code=422)
            strokes.append(Stroke(s.concept, s.mode, mask, s.n_units, s.strength))
        out = _guarded(lambda: painter.render(req.seed, strokes))
        if isinstance(out, JSONResponse):
            return out
        img, report = out
        return {"image": png_data_url(img), "seed": req.seed, "layer": painter.layer,
                "grid": list(painter.grid), **report}

    return app


def _guarded(fn):
    """``fn()``, or a JSON error: 422 for the client's fault, 500 (logged, server alive) otherwise."""
    try:
        return fn()
    except PaintError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    except Exception as exc:  # noqa: BLE001 - one failed render must not take the server down
        log.exception("render failed")
        return JSONResponse({"detail": f"the render failed: {type(exc).__name__}: {exc}"}, status_code=500)

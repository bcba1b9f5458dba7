"""``netdissect paint``: a local web app that paints with the concepts of a generator's units.

- :mod:`netdissect.app.palette`: the palette (concepts with enough units at a layer) from a run;
- :mod:`netdissect.app.painter`: the loaded generator, insertion values and renders;
- :mod:`netdissect.app.server`: the FastAPI app (JSON API, static page);
- :mod:`netdissect.app.toy`: a hand-built generator with known painter units (tests, demo).

``docs/paint.md`` describes the app, its API, the edit rule and its security notes.
"""

"""The dissection report: an offline HTML page per run, and comparison plots across runs.

    >>> from netdissect.report import write_report, compare
    >>> write_report("runs/resnet18")                  # doctest: +SKIP
    PosixPath('runs/resnet18/report/index.html')
    >>> compare(["runs/alexnet", "runs/resnet18"], "runs/cmp", labels=["AlexNet", "ResNet-18"])  # doctest: +SKIP

Modules: :mod:`.run` reads the run directory (docs/run-format.md),
:mod:`.images` the images (a Broden dataset with its masks, an image folder,
or images the run holds), :mod:`.assets` draws and caches the image sheets, :mod:`.records` the per-unit data, :mod:`.charts` the
matplotlib charts, :mod:`.build` the HTML page (templates/), and
:mod:`.comparison` the cross-run plots.  See docs/report.md.
"""
from __future__ import annotations

from netdissect.report.run import RunError

__all__ = ["write_report", "compare", "RunError"]


def write_report(run_dir, out=None, **kwargs):
    """Write ``RUN/report/index.html`` (see :func:`netdissect.report.build.write_report`).

        >>> write_report("runs/demo", out="/tmp/demo-report")   # doctest: +SKIP
        PosixPath('/tmp/demo-report/index.html')
    """
    from netdissect.report.build import write_report as _write

    return _write(run_dir, out, **kwargs)


def compare(run_dirs, out, labels=None, layers=None):
    """Comparison charts of several runs (see :func:`netdissect.report.comparison.compare`).

        >>> compare(["runs/a", "runs/b"], "runs/cmp", labels=["A", "B"])["unique_detectors.svg"]  # doctest: +SKIP
        PosixPath('runs/cmp/unique_detectors.svg')
    """
    from netdissect.report.comparison import compare as _compare

    return _compare(run_dirs, out, labels=labels, layers=layers)

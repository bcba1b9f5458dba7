"""Row datasets and loaders of the two passes: a bad row comes back as an error, never raises in a worker."""
from __future__ import annotations

from torch.utils.data import DataLoader, Dataset

from netdissect.data import LabelSample
from netdissect.errors import DatasetError
from netdissect.stats import LabelBatch
from netdissect.workers import worker_init


class _Rows(Dataset):
    """Rows ``[start, stop)`` of a probe or concept source."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __len__(self):
        return max(0, self.stop - self.start)

    def __getitem__(self, j):
        i = self.start + j
        try:
            return self.load(i)
        except DatasetError as exc:
            return self.failed(i, str(exc))


class InputRows(_Rows):
    """Pass 1's rows: ``(i, payload, None)`` or ``(i, None, error)``.  With ``check`` (a concept
    source), a row whose labels cannot be read fails here too, so that a skipped row is left out
    of every statistic, not only of the IoU counts."""

    def __init__(self, probe, start: int, stop: int, check=None):
        super().__init__(start, stop)
        self.probe, self.check = probe, check

    def load(self, i):
        payload = self.probe.load(i)
        if self.check is not None:
            self.check.check(i)
        return i, payload, None

    def failed(self, i, error):
        return i, None, error


class LabelRows(_Rows):
    """Pass 2's rows: one LabelSample each (``error`` set for a bad row)."""

    def __init__(self, source, start: int, stop: int):
        super().__init__(start, stop)
        self.source = source

    def load(self, i):
        return self.source.load(i)

    def failed(self, i, error):
        return LabelSample(i, None, None, None, error=error)


def collate_inputs(items):
    return items  # stacking happens in the main process, where errors can be raised cleanly


class LabelCollate:
    """Runs in the loader workers: groups a batch's rows by mask size and builds their
    :class:`LabelBatch` there, in parallel with the counting in the main process.

    Returns ``(start, stop, errors, groups)``: ``errors`` maps rows whose files are bad to the
    message; ``groups`` maps (sh, sw) to (LabelBatch on the CPU, batch positions of its rows).
    Rows in ``skip`` (skipped in pass 1) and bad rows are left out of the groups.
    """

    def __init__(self, concepts, skip):
        self.concepts, self.skip = concepts, frozenset(skip)
        self.tables: dict = {}  # number -> column tables, kept by each worker across its batches

    def __call__(self, samples):
        start, stop = samples[0].index, samples[-1].index + 1
        errors, groups = {}, {}
        for s in samples:
            if s.error is not None:
                errors[s.index] = s.error
            elif s.index not in self.skip:
                groups.setdefault(tuple(s.planes.shape[1:]), []).append(s)
        built = {size: (LabelBatch.from_samples(group, self.concepts, tables=self.tables),
                        [s.index - start for s in group])
                 for size, group in groups.items()}
        return start, stop, errors, built


def loader(dataset, batch_size, num_workers, collate):
    """The passes' DataLoader; its workers die with this process (a SIGKILLed job leaves none behind)."""
    kw = {}
    if num_workers:
        kw = dict(num_workers=num_workers, prefetch_factor=4, persistent_workers=False,
                  worker_init_fn=worker_init())
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, **kw)

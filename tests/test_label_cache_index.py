"""The label cache's index (sorted digests, binary search) against a plain dict of the same packs."""
import numpy as np

from netdissect.concepts.cache import LabelCache


def test_index_finds_what_a_dict_would_with_rows_written_again(tmp_path):
    rng = np.random.default_rng(0)
    cache = LabelCache(tmp_path / "c", {"test": "index"})
    reference = {}  # stamp -> planes
    for pack in range(6):
        # each flush: new rows and rows of earlier packs written again (at other places in the pack)
        for i in rng.integers(0, 400, size=120):
            planes = np.full((1, 2, 2), int(i) % 251, np.uint8) + np.arange(4, dtype=np.uint8).reshape(1, 2, 2)
            cache.put(f"row{int(i)}", planes)
            reference[f"row{int(i)}"] = planes
        cache.flush()
    fresh = LabelCache(tmp_path / "c", {"test": "index"})  # reads the packs from disk, in file-name order
    for c in (cache, fresh):
        for s, planes in reference.items():
            np.testing.assert_array_equal(c.get(s), planes)
        for s in ("row400", "row-1", "other"):
            assert not c.has(s) and c.get(s) is None
    keys = cache._keys  # sorted, each digest once
    assert len(keys) == len(reference) == len(np.unique(keys)) and (np.sort(keys) == keys).all()
    # a row written again with other labels: the writer reads the newer ones
    cache.put("row1", np.full((1, 2, 2), 250, np.uint8))
    cache.flush()
    assert (cache.get("row1") == 250).all() and len(cache._keys) == len(reference | {"row1": 0})


def test_index_is_compact(tmp_path):
    cache = LabelCache(tmp_path / "c", {"test": "size"})
    for i in range(5000):
        cache.put(f"r{i}", np.zeros((1, 1, 1), np.uint8))
    cache.flush()
    per_image = (cache._keys.nbytes + cache._pack.nbytes + cache._row.nbytes) / 5000
    assert per_image <= 24, per_image

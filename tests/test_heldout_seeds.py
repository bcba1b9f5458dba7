"""The science checks' seeds are held out from every model's training and choice (docs/world.md, "Seeds")."""
import json
import re
from pathlib import Path

from safetensors import safe_open

import netdissect
from heldout import HELDOUT, USED
from netdissect.cli.demo import PROBE_SEED
from netdissect.data.synth.export import SPLIT_SEEDS
from netdissect.models.zoo import ZOO

ROOT = Path(__file__).parent.parent
PKG = Path(netdissect.__file__).parent
SCIENCE = ["test_emergence.py", "test_experiments_world.py", "test_segment_science.py", "test_gan_science.py",
           "test_roles_science.py", "test_trust_science.py"]


def _recipe_seeds() -> set[int]:
    seeds = {s for e in ZOO.values() for s in (e.train["data_seed"], e.train["heldout_seed"])}
    with safe_open(str(PKG / "segment" / "weights" / "world-seg.safetensors"), "pt") as f:
        train = json.loads(f.metadata()["netdissect_segmenter"])["train"]
    seeds |= {train["data_seed"], train["heldout_seed"]}
    with safe_open(str(PKG / "models" / "zoo" / "weights" / "world-gan.safetensors"), "pt") as f:
        seeds.add(json.loads(f.metadata()["netdissect_zoo"])["train"]["data_seed"])
    return seeds | {PROBE_SEED, *SPLIT_SEEDS.values()}


def test_held_out_seeds_were_never_used_to_train_or_choose():
    used = _recipe_seeds() | USED
    assert not HELDOUT & used, sorted(HELDOUT & used)
    assert all(7001 <= s <= 7099 for s in HELDOUT)
    assert all(not 7001 <= s <= 7099 for s in used)


def test_the_docs_record_every_seed():
    text = (ROOT / "docs" / "world.md").read_text()
    section = text[text.index("\n## Seeds\n") + 1:]
    section = section[:section.find("\n## ")] if "\n## " in section else section
    listed = {int(n) for n in re.findall(r"\b\d+\b", section)}
    zoo_range = "0–999" in section  # the zoo's training and held-out sets
    missing = {s for s in HELDOUT | USED | _recipe_seeds() if s not in listed and not (zoo_range and s < 1000)}
    assert not missing, f"docs/world.md, section Seeds, does not list {sorted(missing)}"
    assert all(str(s) in section for s in HELDOUT)


def test_science_checks_run_on_held_out_seeds():
    for name in SCIENCE:
        src = (Path(__file__).parent / name).read_text()
        assert "from heldout import" in src, name
        used = re.search(r"seed=(2017|3001|3002|[123])\b|seed\", \"(2017|3001|3002|[123])\"", src)
        assert not used, (name, "a seed that chose a model", used)

"""Dissecting a ViT block against its floor: bench_dissect.py with ViT-B/16 defaults.

    python benchmarks/bench_vit.py                       # torchvision:vit_b_16 (random weights), block 7, 224 px
    python benchmarks/bench_vit.py --n 200 --n-small 50 --repeat 1          # a quick look
    python benchmarks/bench_vit.py --model timm:vit_base_patch16_224 --layer blocks.7

Every option of bench_dissect.py applies (its docstring says what each figure is): ``forward``
is one plain forward pass of the whole model over the same images (same loader, fp32, no grad),
``command`` is ``netdissect dissect ... --out RUN`` end to end.  The token layer's (N, 197, 768)
output is traced as the (N, 768, 14, 14) view of its patch tokens (netdissect.hooks.tokens), so
the cache holds 196 of the 197 tokens per image.  The JSON report goes to
benchmarks/out/bench_vit.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_dissect  # noqa: E402

DEFAULTS = ["--model", "torchvision:vit_b_16", "--layer", "encoder.layers.encoder_layer_7", "--size", "224",
            "--n", "1000", "--n-small", "250", "--json", str(HERE / "out" / "bench_vit.json")]

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *DEFAULTS, *sys.argv[1:]]  # later options override the defaults
    bench_dissect.main()

"""Cost of removal over k sizes against k + 1 generator + segmenter passes (issue 12, "Speed").

    python benchmarks/bench_gan_roles.py                      # world-gan architecture, layer4, 256 samples, k = 7
    python benchmarks/bench_gan_roles.py --n 64 --threads 1   # a quick look

- ``pass``: one plain pass over the samples: the whole generator, then the segmenter (``zoo:world-seg`` at
  the label size), batch 32; fastest of ``--repeat`` tries.
- ``removal``: :func:`netdissect.roles.generator.removal` over ``k`` sizes without the random control
  (activation at the layer once per batch, then 1 baseline + k edited suffix + segmenter passes); the target
  is about ``(k + 1) x pass``, where re-rendering the baseline per size (the reference code) costs ``2k``.
- ``removal_control``: the same with the random control (``2k + 1`` suffix + segmenter passes).
- ``naive`` (measured on 1 size, scaled): per size a baseline and an edited full pass (``2k`` passes).
The generator is the ``zoo:world-gan`` architecture (64 px, layer4 8 x 8 x 128); with ``--weights`` its
bundled weights (timing does not depend on them).  Results go to stdout as JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--sizes", default="1,2,4,8,16,20,30")
    ap.add_argument("--layer", default="layer4")
    ap.add_argument("--seg-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--weights", action="store_true", help="load the bundled world-gan weights")
    args = ap.parse_args()
    import numpy as np
    import torch

    from netdissect.interventions import ablate
    from netdissect.models.proggan import ProgressiveGenerator, to_image
    from netdissect.probe.latent import latent_z
    from netdissect.roles.generator import concept_counts, removal
    from netdissect.segment import checked_segment, load_segmenter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = ProgressiveGenerator(64, [256, 128, 64, 32, 16], 128).eval()
    if args.weights:
        from safetensors.torch import load_file

        from netdissect.models.zoo import WEIGHTS_DIR
        g.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS_DIR / "world-gan.safetensors")).items()})
    seg = load_segmenter("zoo:world-seg")
    sizes = [int(s) for s in args.sizes.split(",")]
    k = len(sizes)
    z = torch.from_numpy(latent_z(args.n, 2, 128))
    S = (args.seg_size, args.seg_size)
    ranked = list(range(g.sizes[1]))
    label = 12  # any label number: the cost does not depend on it

    def one_pass(units=None):
        with torch.inference_mode():
            for s in range(0, args.n, args.batch_size):
                zb = z[s:s + args.batch_size]
                if units:
                    with ablate(g, args.layer, units=units):
                        img = to_image(g(zb))
                else:
                    img = to_image(g(zb))
                concept_counts(checked_segment(seg, img, S), label)

    def best(fn):
        """Fastest try's (wall, CPU) seconds; CPU time (process_time) is the steadier figure on a shared machine."""
        times = []
        for _ in range(args.repeat):
            t, c = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - t, time.process_time() - c))
        return min(times), times

    t_pass, all_pass = best(one_pass)
    t_rem, all_rem = best(lambda: removal(g, args.layer, ranked, seg, label, sizes, z, control=False,
                                          batch_size=args.batch_size, seg_size=S, progress=False))
    t_ctl, all_ctl = best(lambda: removal(g, args.layer, ranked, seg, label, sizes, z, control=True,
                                          batch_size=args.batch_size, seg_size=S, progress=False))
    t_naive1, _ = best(lambda: (one_pass(), one_pass(ranked[:sizes[-1]])))
    out = {"generator": "world-gan architecture" + (" (bundled weights)" if args.weights else " (random)"),
           "layer": args.layer, "samples": args.n, "sizes": sizes, "k": k, "seg_size": S,
           "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
           "target_passes (k + 1)": k + 1, "control_target_passes (2k + 1)": 2 * k + 1, "naive_passes (2k)": 2 * k}
    for i, clock in enumerate(("wall", "cpu")):
        out[clock] = {"pass_s": round(t_pass[i], 3), "removal_s": round(t_rem[i], 3),
                      "removal_control_s": round(t_ctl[i], 3), "naive_s (estimated)": round(k * t_naive1[i], 3),
                      "removal_in_passes": round(t_rem[i] / t_pass[i], 2),
                      "removal_control_in_passes": round(t_ctl[i] / t_pass[i], 2),
                      "naive_in_passes": round(k * t_naive1[i] / t_pass[i], 2)}
    out["tries (wall, cpu)"] = {"pass": all_pass, "removal": all_rem, "removal_control": all_ctl}
    print(json.dumps(out, indent=1))
    assert np.isfinite(t_rem[0])


if __name__ == "__main__":
    main()

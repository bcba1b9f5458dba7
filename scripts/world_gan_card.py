"""Measure ``zoo:world-gan`` and write its model card and sample grids.

    python scripts/world_gan_card.py [--n 1000]

Quality checks, all on samples never used in training (z seed 22; real images of world seed 22
rendered at 64 px; the GAN trained on world seed 21):
- the bundled segmenter's (``zoo:world-seg``) concept frequencies on generated vs real images
  (share of pixels per object / material class, read at 32 x 32), with their total variation
  distance, beside the same distance between two real sets (seeds 22 and 23) as the floor;
- the bundled scene classifier's (``zoo:scene-cnn``) predicted scene distribution and mean
  confidence on generated vs real images (both upsampled 64 -> 112 px bilinearly);
- sample grids (``docs/img/world-gan-samples.png`` and the real images beside them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdissect.atomic import save_image, write_text  # noqa: E402
from netdissect.models.proggan import ProgressiveGenerator, to_image  # noqa: E402

WEIGHTS = ROOT / "netdissect/models/zoo/weights/world-gan.safetensors"
CARD = ROOT / "netdissect/models/zoo/weights/world-gan.md"
DEPENDENT = ("; not an independent check: the fine-tuning's discriminator looks at this classifier's features, "
             "so the generator was trained to please it")


def load_gan():
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(WEIGHTS), framework="pt") as f:
        meta = json.loads(f.metadata()["netdissect_zoo"])
    g = ProgressiveGenerator(meta["resolution"], meta["sizes"], meta["z_dim"])
    g.load_state_dict({k: v.float() for k, v in load_file(str(WEIGHTS)).items()})
    return g.eval(), meta


def grid(x: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] as one uint8 image, 2x nearest-upscaled for viewing."""
    x = (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, _ = x.shape
    rows = (n + nrow - 1) // nrow
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x[k]
    return out.repeat(2, 0).repeat(2, 1)


def real_images(n: int, seed: int) -> torch.Tensor:
    from netdissect.data.synth import SceneDataset

    ds = SceneDataset(n, seed=seed, size=64)
    return torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(255), ds.targets


@torch.no_grad()
def generated(g, n: int, seed: int, batch: int = 100) -> torch.Tensor:
    from netdissect.probe.latent import latent_z

    z = torch.from_numpy(latent_z(n, seed, g.z_dim))
    return torch.cat([to_image(g(z[i:i + batch])) for i in range(0, n, batch)])


@torch.no_grad()
def frequencies(seg, images: torch.Tensor, names, categories) -> dict[str, np.ndarray]:
    from netdissect.segment import checked_segment

    counts = np.zeros(len(names) + 1, np.int64)
    for i in range(0, len(images), 100):
        planes = checked_segment(seg, images[i:i + 100], (32, 32))
        counts += np.bincount(planes[:, 0].flatten().numpy(), minlength=len(names) + 1)  # plane 0: objects
    freq = counts[1:] / max(1, counts[1:].sum())
    return freq


@torch.no_grad()
def scenes(clf, images: torch.Tensor, norm) -> tuple[np.ndarray, float]:
    preds, conf = [], []
    for i in range(0, len(images), 100):
        x = F.interpolate(images[i:i + 100], size=(112, 112), mode="bilinear", align_corners=False)
        p = torch.softmax(clf(norm(x)), 1)
        c, k = p.max(1)
        preds.append(k.numpy())
        conf.append(c.numpy())
    return np.concatenate(preds), float(np.concatenate(conf).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    g, meta = load_gan()
    from netdissect.data.synth import SCENES
    from netdissect.models import load_model
    from netdissect.segment import catalogue, load_segmenter

    seg = load_segmenter("zoo:world-seg")
    cat = catalogue(seg)
    obj = [i for i, n in enumerate(cat.names) if cat.categories[cat.primary[i]] == "object"]
    gen = generated(g, args.n, 22)
    real, real_scene = real_images(args.n, 22)
    real2, _ = real_images(args.n, 23)
    f_gen, f_real, f_real2 = (frequencies(seg, x, cat.names, cat.categories) for x in (gen, real, real2))
    tvd = 0.5 * float(np.abs(f_gen - f_real).sum())
    tvd_floor = 0.5 * float(np.abs(f_real2 - f_real).sum())
    clf, norm = load_model("zoo:scene-cnn")
    p_gen, c_gen = scenes(clf, gen, norm)
    p_real, c_real = scenes(clf, real, norm)
    acc_real = float((p_real == np.asarray(real_scene)).mean())
    h_gen = np.bincount(p_gen, minlength=len(SCENES)) / len(p_gen)
    h_real = np.bincount(p_real, minlength=len(SCENES)) / len(p_real)
    img = ROOT / "docs/img"
    save_image(img / "world-gan-samples.png", Image.fromarray(grid(gen[:32])))
    save_image(img / "world-gan-real.png", Image.fromarray(grid(real[:32])))

    rows = sorted(obj, key=lambda i: -f_real[i])
    first = meta.get("first_phase", meta)  # the first recipe's record (kept apart once fine-tuned)
    vae_steps = (f"VAE for the first ~{first['vae_steps']} steps, adversarial for the rest" if first.get("vae_steps")
                 else "phase split not recorded")
    training = (f"| training | {first['steps']} steps of batch {meta['train']['batch']} in two phases "
                f"({vae_steps}): first as a VAE decoder (conv encoder, MSE + KL, weight {meta['train']['w_rec']}, "
                f"Adam lr {meta['train']['lr_vae']}), then adversarially with the VAE terms kept: hinge loss, spectrally "
                f"normalised conv discriminator (widths {meta['train']['d_widths']}), Adam betas {meta['train']['betas']}, "
                f"lr G {meta['train']['lr_g']} / D {meta['train']['lr_d']}; EMA {meta['train']['ema']} of G's weights, "
                f"torch seed {meta['train']['torch_seed']}; {first['minutes']} min on {first['threads']} CPU thread(s); "
                "`scripts/train_world_gan.py` says why |")
    if "finetune" in meta:
        ft = meta["finetune"]
        runs = "; ".join(f"steps {h['from_step']}-{h['to_step']}: {h['minutes']} min on {h['threads']} thread(s)"
                         + (f" ({h['note']})" if h.get("note") else "") for h in meta["finetune_sessions"])
        training += (f"\n| fine-tuning (bundled) | {meta['finetune_steps']} more steps of batch {ft['batch']} from those "
                     f"weights against a projected discriminator: frozen `zoo:scene-cnn` features ({', '.join(ft['features'])}) "
                     f"through fixed random 1x1 projections, a spectrally normalised conv head per level (width "
                     f"{ft['head_width']}); hinge loss; Adam betas {ft['betas']}, lr G {ft['lr_g']} / heads {ft['lr_d']}; "
                     f"EMA {ft['ema']} of G's weights (bundled); torch seed {ft['torch_seed']}; {runs}; "
                     "`scripts/finetune_world_gan.py` says why and what did not work |")
        wall = f"{round(first['minutes'] + meta['finetune_minutes'], 1)} min in all, torch {meta['torch']}"
    else:
        wall = f"{meta['minutes']} min on {meta['threads']} CPU thread(s), torch {meta['torch']}"
    lines = [
        "# Model card: `zoo:world-gan`",
        "",
        "A 64 px progressive-GAN-style generator (`ProgressiveGenerator(64, "
        f"{meta['sizes']}, z_dim={meta['z_dim']})`: the published PNAS architecture, blocks "
        "`layer1`..`layer10` with pixel norm, weight scaling and LeakyReLU(0.2), then `output_64x64`; "
        "two blocks per resolution 4, 8, 16, 32, 64 px, so `layer4` is 8 x 8 as in the paper) trained "
        "on the scene images of the synthetic world (`docs/world.md`). z: 128-d standard normal, "
        "drawn as the PNAS experiments draw it (`numpy.random.RandomState(seed).standard_normal`). "
        "Output RGB in about [-1, 1].",
        "",
        "| field | value |",
        "|---|---|",
        f"| training data | world seed {meta['train']['data_seed']}, {meta['train']['n_train']} scene images at 64 px, "
        "random left-right flips |",
        training,
        f"| wall time | {wall} |",
        f"| parameters | {sum(p.numel() for p in g.parameters()):,} |",
        f"| weights | `world-gan.safetensors`, float16, {WEIGHTS.stat().st_size / 1e6:.2f} MB |",
        f"| rebuild | `{meta['train_command']}` then `python scripts/world_gan_card.py` |",
        "",
        f"## Quality (measured by `scripts/world_gan_card.py` on {args.n} samples of z seed 22 and {args.n} real "
        "images of world seed 22, neither used in training)",
        "",
        "| check | generated | real |",
        "|---|---|---|",
        f"| `zoo:scene-cnn` mean top-1 confidence (images upsampled to 112 px)"
        f"{DEPENDENT if 'finetune' in meta else ''} | {c_gen:.3f} | {c_real:.3f} "
        f"(accuracy {acc_real:.3f} at 64 -> 112 px) |",
        f"| object-pixel distribution by `zoo:world-seg`: total variation distance to real seed 22 | {tvd:.3f} | "
        f"{tvd_floor:.3f} (real seed 23, the floor) |",
        "",
        "Predicted scenes (share of samples):",
        "",
        "| scene | generated | real |",
        "|---|---|---|",
        *[f"| {s} | {h_gen[k]:.3f} | {h_real[k]:.3f} |" for k, s in enumerate(SCENES)],
        "",
        "Object pixels by `zoo:world-seg` (share of all object pixels, read at 32 x 32):",
        "",
        "| object | generated | real |",
        "|---|---|---|",
        *[f"| {cat.names[i]} | {f_gen[i]:.4f} | {f_real[i]:.4f} |" for i in rows],
        "",
        "**Limits, from looking at the samples below.** Most samples are recognisable scenes of the world: "
        "beaches (sky, a band of sea, sand), harbours with boats, streets with houses, wooded hills, fields and "
        "rooms with a floor; people, cars and lamps are blots of a few pixels. They carry a fine grid of "
        "vertical and horizontal stripes (strongest on grass and trees) that the world's images do not have, and "
        "no night scenes at all: `zoo:scene-cnn` calls none of 1000 samples night_city (table above), so the "
        "generator dropped that mode during fine-tuning. The segmenter's object distribution is closer to the "
        "real one than the first weights' (total variation 0.234 before fine-tuning) but has more grass and "
        "water and less road.",
        "",
        "Samples (z seed 22, first 32) and real images (world seed 22) for comparison:",
        "",
        "![generated](../../../../docs/img/world-gan-samples.png)",
        "![real](../../../../docs/img/world-gan-real.png)",
        "",
    ]
    write_text(CARD, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

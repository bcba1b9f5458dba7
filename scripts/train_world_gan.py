"""Train ``zoo:world-gan``: a 64 px progressive-GAN-style generator on the synthetic world's scenes.

    python scripts/train_world_gan.py [--minutes 50] [--out netdissect/models/zoo/weights]

The generator is :class:`netdissect.models.proggan.ProgressiveGenerator` (the published PNAS
architecture at 64 px: blocks layer1..layer10, then output_64x64), trained at its full resolution
(no progressive growing) in two phases, because a plain GAN does not get far in the CPU budget of
the bundle (measured: after 1675 steps of 32 images, 36 min, its samples were one noisy green field):
1. ``--vae-minutes``: as the decoder of a variational autoencoder (a small conv encoder; mean
   squared error + KL to N(0, I)), which lays out sky, ground and objects within minutes and covers
   the whole data distribution (no mode collapse);
2. the rest: adversarially, against a spectrally normalised convolutional discriminator with the
   hinge loss, keeping the VAE terms (weight ``w_rec``) so the samples stay diverse while the
   adversarial term sharpens them; an exponential moving average of the generator's weights is
   what is bundled.
Adam, horizontal flips of the real images. Training data: world seed 21
(scene images only, rendered at 64 px); seeds 21-22 are reserved for this model (22: quality
checks in ``scripts/world_gan_card.py``).  Checkpoints every few minutes in ``--work``; a killed
run resumes from the last one.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netdissect.atomic import write_bytes  # noqa: E402
from netdissect.models.proggan import ProgressiveGenerator, to_image  # noqa: E402

RECIPE = {"resolution": 64, "sizes": [256, 128, 64, 32, 16], "z_dim": 128, "data_seed": 21, "n_train": 12000,
          "batch": 32, "lr_vae": 1e-3, "lr_g": 2e-4, "lr_d": 4e-4, "w_rec": 10.0, "beta_kl": 1.0, "betas": [0.0, 0.99], "ema": 0.999, "torch_seed": 0,
          "d_widths": [16, 32, 64, 128, 256]}


class Discriminator(nn.Module):
    def __init__(self, widths):
        super().__init__()
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(3, widths[0], 3, 1, 1)), nn.LeakyReLU(0.2)]
        cin = widths[0]
        for w in widths[1:]:
            layers += [spectral_norm(nn.Conv2d(cin, w, 4, 2, 1)), nn.LeakyReLU(0.2),
                       spectral_norm(nn.Conv2d(w, w, 3, 1, 1)), nn.LeakyReLU(0.2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = spectral_norm(nn.Linear(cin * 4 * 4, 1))

    def forward(self, x):
        return self.head(self.features(x).flatten(1)).squeeze(1)


class Encoder(nn.Module):
    """The VAE encoder of the first phase: image -> (mu, logvar) of z."""

    def __init__(self, z_dim, widths=(32, 64, 128, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 4, 2, 1), nn.LeakyReLU(0.2)]
            cin = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin * 4 * 4, 2 * z_dim)

    def forward(self, x):
        mu, logvar = self.head(self.features(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 4)


def vae_terms(E, G, real, gen):
    """Reconstruction (mean squared error per value) and KL (per value of the image) of a batch."""
    mu, logvar = E(real)
    z = mu + torch.randn(mu.shape, generator=gen) * (0.5 * logvar).exp()
    rec = F.mse_loss(G(z), real)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean() / real[0].numel()
    return rec, kl


def render(n, seed, size, progress=True):
    from netdissect.data.synth import SceneDataset
    ds = SceneDataset(n, seed=seed, size=size, progress=progress)
    return torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous()  # uint8 (N, 3, H, W)


def real_batch(data: torch.Tensor, B: int, gen: torch.Generator) -> torch.Tensor:
    """B training images drawn with replacement, in [-1, 1], half of them flipped left-right."""
    idx = torch.randint(0, len(data), (B,), generator=gen)
    real = data[idx].float().div_(127.5).sub_(1)
    flip = torch.rand(B, generator=gen) < 0.5
    real[flip] = real[flip].flip(3)
    return real


def hinge_d_step(D, opt_d, G, real: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One discriminator step of the hinge loss against G(z); returns the loss."""
    with torch.no_grad():
        fake = G(z)
    loss_d = F.relu(1 - D(real)).mean() + F.relu(1 + D(fake)).mean()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d


def vae_steps(log: list[dict]) -> int | None:
    """About how many steps the VAE phase took: the first logged adversarial step, less the 25 between log
    entries (None if the run never reached the adversarial phase)."""
    first_gan = next((e["step"] for e in log if e.get("phase") == "gan"), None)
    return None if first_gan is None else first_gan - 25


def grid(images: torch.Tensor, path: Path, nrow: int = 8):
    from PIL import Image
    x = (to_image(images.float()) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    n, h, w, _ = x.shape
    rows = (n + nrow - 1) // nrow
    out = np.zeros((rows * (h + 2), nrow * (w + 2), 3), np.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        out[r * (h + 2):r * (h + 2) + h, c * (w + 2):c * (w + 2) + w] = x[k]
    Image.fromarray(out).save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=50.0, help="wall-clock budget for training")
    ap.add_argument("--vae-minutes", type=float, default=20.0, help="of which the first phase (VAE) takes this")
    ap.add_argument("--steps", type=int, default=100000, help="at most this many steps")
    ap.add_argument("--work", default="runs/train-world-gan", help="checkpoints, sample grids, log")
    ap.add_argument("--out", default=str(ROOT / "netdissect/models/zoo/weights"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    R = RECIPE
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(R["torch_seed"])
    G = ProgressiveGenerator(R["resolution"], R["sizes"], R["z_dim"])
    E = Encoder(R["z_dim"])
    D = Discriminator(R["d_widths"])
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(list(G.parameters()) + list(E.parameters()), R["lr_vae"], betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(D.parameters(), R["lr_d"], betas=tuple(R["betas"]))
    step, elapsed, log, phase = 0, 0.0, [], "vae"
    ckpt = work / "checkpoint.pt"
    if ckpt.exists() and not args.bench:
        s = torch.load(ckpt, weights_only=False)
        G.load_state_dict(s["G"]); D.load_state_dict(s["D"]); G_ema.load_state_dict(s["G_ema"])
        E.load_state_dict(s["E"])
        phase = s["phase"]
        if phase == "gan":
            opt_g = torch.optim.Adam(list(G.parameters()) + list(E.parameters()), R["lr_g"],
                                     betas=tuple(R["betas"]))
        opt_g.load_state_dict(s["opt_g"]); opt_d.load_state_dict(s["opt_d"])
        step, elapsed, log = s["step"], s["elapsed"], s["log"]
        torch.set_rng_state(s["rng"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min, phase {phase})")
    data_path = work / "data.pt"
    if data_path.exists():
        data = torch.load(data_path)
    else:
        data = render(R["n_train"] if not args.bench else 256, R["data_seed"], R["resolution"])
        if not args.bench:
            torch.save(data, data_path)
    gen = torch.Generator().manual_seed(R["torch_seed"] + step)
    fixed_z = torch.randn(32, R["z_dim"], generator=torch.Generator().manual_seed(12345))
    B = R["batch"]
    start = time.time() - elapsed
    last_ckpt = time.time()
    loss_d = torch.zeros(())
    while step < args.steps:
        if phase == "vae" and time.time() - start > args.vae_minutes * 60:
            phase = "gan"  # adversarial phase: G (and E) start from the VAE, D from scratch
            opt_g = torch.optim.Adam(list(G.parameters()) + list(E.parameters()), R["lr_g"],
                                     betas=tuple(R["betas"]))
            G_ema.load_state_dict(G.state_dict())
            print(f"adversarial phase from step {step}", flush=True)
        real = real_batch(data, B, gen)
        if phase == "gan":  # discriminator step
            loss_d = hinge_d_step(D, opt_d, G, real, torch.randn(B, R["z_dim"], generator=gen))
        # generator (+ encoder) step: the VAE terms always, the adversarial term in phase 2
        rec, kl = vae_terms(E, G, real, gen)
        loss_g = R["w_rec"] * (rec + R["beta_kl"] * kl)
        adv = torch.zeros(())
        if phase == "gan":
            z = torch.randn(B, R["z_dim"], generator=gen)
            D.requires_grad_(False)
            adv = -D(G(z)).mean()
            loss_g = loss_g + adv
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        with torch.no_grad():
            beta = R["ema"] if phase == "gan" else 0.99
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - beta)
        step += 1
        if step % 25 == 0:
            log.append({"step": step, "phase": phase, "loss_d": float(loss_d), "adv": float(adv), "rec": float(rec),
                        "kl": float(kl), "minutes": (time.time() - start) / 60})
            print(json.dumps(log[-1]), flush=True)
        if args.bench and step >= args.bench:
            print(f"{(time.time() - start) / step:.3f} s/step")
            return
        if step % 250 == 0:
            with torch.no_grad():
                grid(G_ema(fixed_z), work / f"samples_{step:06d}.png")
        out_of_time = time.time() - start > args.minutes * 60
        if time.time() - last_ckpt > 180 or out_of_time or step >= args.steps:
            tmp = work / "checkpoint.pt.tmp"
            torch.save({"G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(), "E": E.state_dict(),
                        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step, "phase": phase,
                        "elapsed": time.time() - start, "log": log, "rng": torch.get_rng_state()}, tmp)
            os.replace(tmp, ckpt)
            last_ckpt = time.time()
        if out_of_time:
            break
    with torch.no_grad():
        grid(G_ema(fixed_z), work / "samples_final.png")
    from safetensors.torch import save
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in G_ema.state_dict().items()}
    record = {"kind": "generator", "architecture": "ProgressiveGenerator", "resolution": R["resolution"],
              "sizes": R["sizes"], "z_dim": R["z_dim"], "layers": G.layer_names, "output": "RGB in about [-1, 1]",
              "train": R, "steps": step, "vae_steps": vae_steps(log), "minutes": round((time.time() - start) / 60, 1),
              "torch": torch.__version__, "threads": args.threads,
              "train_command": "python scripts/train_world_gan.py"}
    meta = {"recipe": json.dumps(R), "netdissect_zoo": json.dumps(record)}
    out = Path(args.out)
    write_bytes(out / "world-gan.safetensors", save(sd, metadata=meta))
    (work / "train_log.json").write_text(json.dumps(log))
    print(f"wrote {out / 'world-gan.safetensors'} after {step} steps")


if __name__ == "__main__":
    main()

"""Where do the Grad-CAM maps look? Hit rate (CAM centre of mass inside the lesion) per backbone and seed.

Same procedure as tests/test_gradcam_lesion.py, for more seeds: off-centre synthetic lesions (class decided
by the lesion), a short training through the quick profile's batches, then ``gradcam.source_maps`` (what
eval/gradcam.png draws) on held-out images. Prints the trained hit rate next to its controls: image centre,
another image's lesion, and the untrained network. A blank map is a miss (its share is printed too).
Target: trained >= 0.7. For the ViT every method of ``gradcam.VIT_METHODS`` is scored on the same trained
network (attention rollout is what the grid draws; token Grad-CAM is the comparison).

    .venv/bin/python benchmarks/gradcam_lesion.py [--models resnet50 vit_b_16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["bcc", "mel", "nv", "vasc"]
# model -> (image side, epochs, options): small members of each family, built by the production builders.
SETUPS = {"resnet50": (128, 20, "{widen_factor: 0.125}"),
          "vit_b_16": (64, 20, "{patch_size: 8, hidden_size: 64, mlp_dim: 128, num_layers: 2, num_heads: 4}")}


def hit_rates(model: str, seed: int, n_train: int = 160, n_val: int = 60) -> dict[str, dict[str, float]]:
    """Per map method (``"cam"`` for a CNN, each of ``VIT_METHODS`` for the ViT): hit rates and controls."""
    import torch

    from hpcseg.spec import load_job
    from hpcseg.workloads.ham10000.gradcam import VIT_METHODS, lesion_hits, source_maps
    from hpcseg.workloads.ham10000.models import build
    from hpcseg.workloads.ham10000.synth_looks import off_centre_set
    from hpcseg.workloads.ham10000.train import Ham10000Source

    size, epochs, options = SETUPS[model]
    images, labels, masks = off_centre_set(np.random.default_rng(seed), n_train + n_val, size, CLASSES)
    spec = load_job(REPO / "jobs" / "ham10000_comparison.yaml", "quick",
                    [f"workload.dataset.image_size={size}", f"workload.dataset.num_classes={len(CLASSES)}",
                     f"workload.dataset.class_names=[{','.join(CLASSES)}]", f"workload.models.{model}.options={options}"]).spec
    src = Ham10000Source(spec, [str(i) for i in range(len(labels))], torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                         torch.from_numpy(labels), torch.device("cpu"), class_names=CLASSES)
    train, val = np.arange(n_train), np.arange(n_train, n_train + n_val)
    methods = list(VIT_METHODS) if model == "vit_b_16" else ["cam"]

    def maps(net: torch.nn.Module, method: str) -> tuple[np.ndarray, np.ndarray]:
        return source_maps(net, src, val.tolist(), **({} if method == "cam" else {"vit_method": method}))

    torch.manual_seed(seed)
    net = build(spec, spec.model(model))
    untrained = {m: float(lesion_hits(maps(net, m)[0], masks[val]).mean()) for m in methods}
    opt = torch.optim.Adam(net.parameters(), lr=spec.training.lr)
    t0 = time.time()
    net.train()
    for epoch in range(epochs):
        for x, y in src.batches(train, 16, train=True, epoch=epoch, seed=seed):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    train_s = time.time() - t0
    out = {}
    for m in methods:
        t1 = time.time()
        cams, pred = maps(net, m)
        out[m] = {"accuracy": float((pred == labels[val]).mean()), "trained": float(lesion_hits(cams, masks[val]).mean()),
                  "blank": float((cams.reshape(len(cams), -1).max(1) <= 0).mean()),
                  "centre": float(masks[val, size // 2, size // 2].mean()),
                  "shuffled": float(lesion_hits(cams, np.roll(masks[val], 1, axis=0)).mean()),
                  "untrained": untrained[m], "train_s": train_s, "maps_s": time.time() - t1}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    for model in args.models:
        for seed in args.seeds:
            for method, r in hit_rates(model, seed).items():
                print(f"{model:9s} {method:13s} seed {seed}: hit rate trained {r['trained']:.2f} (target >= 0.7; "
                      f"blank maps {r['blank']:.2f}) | image centre {r['centre']:.2f} | other image's lesion "
                      f"{r['shuffled']:.2f} | untrained {r['untrained']:.2f} | val accuracy {r['accuracy']:.2f} "
                      f"| train {r['train_s']:.0f}s, maps {r['maps_s']:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

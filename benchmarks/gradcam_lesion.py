"""Where do the Grad-CAM maps look? Hit rate (CAM centre of mass inside the lesion) per backbone and seed.

Same procedure as tests/test_gradcam_lesion.py, for more seeds and for the ViT token path too: off-centre
synthetic lesions (class decided by the lesion), a short training through the quick profile's batches, then
``gradcam.source_maps`` (what eval/gradcam.png draws) on held-out images. Prints the trained hit rate next to
its controls: image centre, another image's lesion, and the untrained network. Target: trained >= 0.7.

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


def hit_rates(model: str, seed: int, n_train: int = 160, n_val: int = 60) -> dict[str, float]:
    import torch

    from hpcseg.spec import load_job
    from hpcseg.workloads.ham10000.gradcam import centre_of_mass, source_maps
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

    def hits(maps: np.ndarray, m: np.ndarray) -> float:
        rc = np.clip(centre_of_mass(torch.from_numpy(maps)).numpy().astype(np.int64), 0, size - 1)
        return float(m[np.arange(len(m)), rc[:, 0], rc[:, 1]].mean())

    torch.manual_seed(seed)
    net = build(spec, spec.model(model))
    untrained = hits(source_maps(net, src, val.tolist())[0], masks[val])
    opt = torch.optim.Adam(net.parameters(), lr=spec.training.lr)
    t0 = time.time()
    net.train()
    for epoch in range(epochs):
        for x, y in src.batches(train, 16, train=True, epoch=epoch, seed=seed):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    maps, pred = source_maps(net, src, val.tolist())
    return {"accuracy": float((pred == labels[val]).mean()), "trained": hits(maps, masks[val]),
            "centre": float(masks[val, size // 2, size // 2].mean()),
            "shuffled": hits(maps, np.roll(masks[val], 1, axis=0)), "untrained": untrained, "train_s": time.time() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    for model in args.models:
        for seed in args.seeds:
            r = hit_rates(model, seed)
            print(f"{model:9s} seed {seed}: hit rate trained {r['trained']:.2f} (target >= 0.7) | image centre "
                  f"{r['centre']:.2f} | other image's lesion {r['shuffled']:.2f} | untrained {r['untrained']:.2f} "
                  f"| val accuracy {r['accuracy']:.2f} | train {r['train_s']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

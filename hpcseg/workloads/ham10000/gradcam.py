"""Where each backbone looks: Grad-CAM maps on a fixed set of validation images per class, as one PNG grid.

CNNs use MONAI's ``GradCAM`` on the last convolutional stage: ResNet-50 ``layer4``, DenseNet-121
``class_layers.relu`` (the activation after dense block 4 and norm5), EfficientNet-B3 ``_bn1`` (the head
convolution's batch norm; the shared ``_swish`` module runs twice per forward and cannot be hooked).

ViT-B/16 has no convolutional stage, so it gets attention rollout (Abnar & Zuidema 2020), not Grad-CAM:
per encoder block the attention probabilities averaged over heads, plus the identity (the residual path),
row-normalised; these multiplied from the first block to the last; the map is the class token's row over
the patch tokens, reshaped to the patch grid. It says which patches the class token drew on, for any
class, so it is the same map whatever the predicted class (the grid's title says so). Why rollout: on the
off-centre synthetic lesions of benchmarks/gradcam_lesion.py a tiny ViT (2 blocks, 8 px patches, 64 px)
that classified (almost) perfectly put its rollout centre of mass in the lesion for 0.77-0.98 of held-out images
over 16 seeds, where Grad-CAM on the tokens entering the last block (``vit_token_gradcam``, kept for that
benchmark) scored 0.03-0.95 with up to a third of its maps blank (all-negative before the ReLU), and
gradient-weighted variants (Chefer et al. 2021; token-wise gradient x activation; Grad-CAM at the first
block) scored 0.13-0.97, each with a lower minimum (docs/formats.md).

The fixed set: the first ``per_class`` validation images of each class in validation order, so the
grids of all backbones in a run show the same images.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hpcseg.fsutil import write_bytes_atomic

CNN_LAYERS = {"resnet50": "layer4", "densenet121": "class_layers.relu", "efficientnet_b3": "_bn1"}
PER_CLASS = 3
METHOD = {"resnet50": "MONAI GradCAM on layer4", "densenet121": "MONAI GradCAM on class_layers.relu",
          "efficientnet_b3": "MONAI GradCAM on _bn1 (head conv)",
          "vit_b_16": "attention rollout (Abnar & Zuidema 2020), class token over patches; not class-specific"}


# The builders of hpcseg.workloads.ham10000.models: network class -> arch (the runner hands over the model only).
ARCH_BY_CLASS = {"ResNet": "resnet50", "DenseNet121": "densenet121", "DenseNet": "densenet121",
                 "EfficientNetBN": "efficientnet_b3", "ViT": "vit_b_16"}


def arch_of(model: torch.nn.Module) -> str:
    name = type(model).__name__
    if name not in ARCH_BY_CLASS:
        raise ValueError(f"Grad-CAM: no target layer known for {name}")
    return ARCH_BY_CLASS[name]


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    """Each map to [0, 1]. A flat map (e.g. the 1x1 last stage of a CNN on 32 px images) becomes 0, not
    min-max-stretched rounding noise (MONAI's default normaliser would show that noise as a pattern)."""
    flat = cam.flatten(1).float()
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    flat_map = span <= 1e-4 * hi.abs().clamp_min(1e-12)
    out = torch.where(flat_map, torch.zeros_like(flat), (flat - lo) / span.clamp_min(1e-12))
    return out.view_as(cam)


def _to_image(tokens: torch.Tensor, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, patches) token scores -> (B, 1, H, W) maps in [0, 1] at the image size."""
    p = model.conv_proj.kernel_size[0]
    h, w = x.shape[-2] // p, x.shape[-1] // p
    cam = F.interpolate(tokens.reshape(-1, 1, h, w).detach().float(), size=x.shape[-2:], mode="bilinear",
                        align_corners=False)
    return _normalise(cam)


def vit_rollout(model: torch.nn.Module, x: torch.Tensor, class_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Attention rollout; (B, 1, H, W) in [0, 1]. ``class_idx`` is accepted for the common signature and
    ignored: rollout has no class. The attention probabilities are PyTorch's own (each block's
    ``nn.MultiheadAttention`` is asked for its head-averaged weights by a pre-hook), not recomputed here."""
    del class_idx
    weights: list[torch.Tensor] = []

    def ask(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def keep(_m: Any, _i: Any, out: tuple[torch.Tensor, torch.Tensor]) -> None:
        weights.append(out[1])

    handles = []
    for block in model.encoder.layers:
        handles.append(block.self_attention.register_forward_pre_hook(ask, with_kwargs=True))
        handles.append(block.self_attention.register_forward_hook(keep))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    eye = torch.eye(weights[0].shape[-1], dtype=weights[0].dtype, device=weights[0].device)
    rollout = eye.expand_as(weights[0])
    for a in weights:                                              # (B, tokens, tokens), heads averaged
        a = a + eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    return _to_image(rollout[:, 0, 1:], model, x)


def vit_token_gradcam(model: torch.nn.Module, x: torch.Tensor, class_idx: torch.Tensor | None = None) -> torch.Tensor:
    """Grad-CAM on the tokens entering the last block's attention (``ln_1``'s output: the last block's
    OUTPUT patch tokens get no gradient, only the class token leaves it): channel weights = gradients
    averaged over the patch tokens, ReLU of the weighted sum. Not what the grid draws (it localised badly,
    see the module docstring); kept so that benchmarks/gradcam_lesion.py can show the comparison."""
    layer = model.encoder.layers[-1].ln_1
    store: dict[str, torch.Tensor] = {}

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        out.retain_grad()
        store["a"] = out

    handle = layer.register_forward_hook(hook)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            idx = logits.argmax(1) if class_idx is None else class_idx
            model.zero_grad(set_to_none=True)
            logits.gather(1, idx.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
        model.train(was)
    a, g = store["a"][:, 1:], store["a"].grad[:, 1:]             # patch tokens, (B, P, D)
    return _to_image(F.relu((a * g.mean(dim=1, keepdim=True)).sum(-1)), model, x)


VIT_METHODS = {"rollout": vit_rollout, "token_gradcam": vit_token_gradcam}


def cam_maps(model: torch.nn.Module, arch: str, x: torch.Tensor, class_idx: torch.Tensor | None = None,
             vit_method: str = "rollout") -> torch.Tensor:
    """(B, 1, H, W) maps in [0, 1] for the predicted class (or ``class_idx``; the ViT's rollout has none)."""
    if arch == "vit_b_16":
        return VIT_METHODS[vit_method](model, x, class_idx)
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=model, target_layers=CNN_LAYERS[arch], postprocessing=_normalise)
    out = []
    for i in range(x.shape[0]):  # one at a time: MONAI takes a single class index per call
        ci = None if class_idx is None else int(class_idx[i])
        with torch.enable_grad():
            out.append(cam(x[i:i + 1], class_idx=ci).detach())
    return torch.cat(out).float()


def centre_of_mass(cam: torch.Tensor) -> torch.Tensor:
    """(B, 2) row, column of each (B, 1, H, W) map's centre of mass, in pixels; NaN for a blank map
    (nothing above 0 to weigh), so that it scores as a miss instead of landing on pixel (0, 0)."""
    b, _, h, w = cam.shape
    m = cam.reshape(b, h, w).double().clamp_min(0)
    total = m.sum((1, 2))
    rows = torch.arange(h, dtype=torch.float64, device=cam.device) + 0.5
    cols = torch.arange(w, dtype=torch.float64, device=cam.device) + 0.5
    com = torch.stack([(m.sum(2) * rows).sum(1), (m.sum(1) * cols).sum(1)], dim=1) / total.clamp_min(1e-300)[:, None]
    return torch.where((total > 0)[:, None], com, torch.full_like(com, float("nan")))


def lesion_hits(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Whether each (B, 1, H, W) map's centre of mass (the pixel it falls in) lies inside its (B, H, W)
    boolean mask; a blank map is a miss. The score of tests/test_gradcam_lesion.py and the benchmark."""
    com = centre_of_mass(torch.from_numpy(np.ascontiguousarray(maps))).numpy()
    ok = np.isfinite(com).all(1)
    rc = np.clip(np.nan_to_num(com).astype(np.int64), 0, np.array(masks.shape[1:]) - 1)
    return ok & masks[np.arange(len(masks)), rc[:, 0], rc[:, 1]]


def fixed_images(labels: np.ndarray, indices: np.ndarray, num_classes: int, per_class: int = PER_CLASS) -> list[int]:
    """The first ``per_class`` validation items of each class (positions into the dataset)."""
    chosen: list[int] = []
    for c in range(num_classes):
        chosen += [int(i) for i in indices[labels[indices] == c][:per_class]]
    return chosen


def source_maps(model: torch.nn.Module, source: Any, chosen: list[int],
                vit_method: str = "rollout") -> tuple[np.ndarray, np.ndarray]:
    """The maps :func:`write_gradcam` draws, (len(chosen), 1, H, W) in [0, 1], for the predicted classes
    (also returned); split out so that a test can score exactly what the grid shows."""
    sel = torch.as_tensor(chosen, device=source.device)
    x = source.normalise(source.images.index_select(0, sel))
    with torch.no_grad():
        pred = model.eval()(x).argmax(1)
    return cam_maps(model, arch_of(model), x, vit_method=vit_method).cpu().numpy(), pred.cpu().numpy()


def write_gradcam(model: torch.nn.Module, source: Any, indices: np.ndarray, out_dir: Path,
                  per_class: int = PER_CLASS) -> dict[str, Any]:
    """eval/gradcam.png: rows = classes, columns = images with the map of the predicted class overlaid."""
    arch = arch_of(model)
    labels = source.labels.cpu().numpy()
    chosen = fixed_images(labels, np.asarray(indices), source.num_classes, per_class)
    if not chosen:
        return {"images": 0}
    maps, pred = source_maps(model, source, chosen)
    sel = torch.as_tensor(chosen, device=source.device)
    rgb = source.images.index_select(0, sel).permute(0, 2, 3, 1).cpu().numpy()
    _grid(out_dir / "eval" / "gradcam.png", rgb, maps[:, 0], labels[chosen], pred, source.class_names,
          per_class, METHOD.get(arch, arch))
    return {"images": len(chosen), "per_class": per_class, "method": METHOD.get(arch, arch), "file": "eval/gradcam.png"}


def _grid(path: Path, rgb: np.ndarray, maps: np.ndarray, true: np.ndarray, pred: np.ndarray, names: list[str],
          per_class: int, method: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    classes = sorted(set(true.tolist()))
    fig = Figure(figsize=(2 * per_class, 2 * len(classes) + 0.4))
    fig.suptitle(method, fontsize=8)
    for r, c in enumerate(classes):
        for j, i in enumerate(np.flatnonzero(true == c)[:per_class]):
            ax = fig.add_subplot(len(classes), per_class, r * per_class + j + 1)
            ax.imshow(rgb[i])
            ax.imshow(maps[i], cmap="jet", alpha=0.4, vmin=0, vmax=1)
            ax.set_title(f"{names[c]} -> {names[pred[i]]}", fontsize=7)
            ax.axis("off")
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())

"""Every ``model.arch`` hpcseg can build, and what a job must satisfy for it, known without torch.

The generic U-Nets are listed here, each workload's architectures in hpcseg/workloads/registry.py;
hpcseg/train/models.py builds from this catalogue, and ``hpcseg check`` uses it to refuse, before the
queue, what the builder would refuse on the node: an unknown arch, an option the builder never reads (a
typo silently trains the default; a workload's data source may read options too), and an image size
the network cannot divide.
"""

from __future__ import annotations

import difflib

from hpcseg.spec import JobSpec, ModelSpec
from hpcseg.workloads.registry import WORKLOADS, Arch, archs

# The U-Net family of seed 004 (classic, attention, attention-residual; options.upsample: deconv | nearest)
# and MONAI's residual UNet. Each halves the image once per level of model.channels.
UPSAMPLE_VALUES = ("deconv", "nearest")  # hpcseg/train/models.py UPSAMPLE
GENERIC: dict[str, Arch] = {
    "unet": Arch("hpcseg.train.models:build_unet", ("upsample",)),
    "attention_unet": Arch("hpcseg.train.models:build_attention_unet", ("upsample",)),
    "attention_res_unet": Arch("hpcseg.train.models:build_attention_res_unet", ("upsample",)),
    "residual_unet": Arch("hpcseg.train.models:build_residual_unet", ("num_res_units",)),
}
CATALOGUE: dict[str, Arch] = {**GENERIC, **archs()}


def model_problems(spec: JobSpec, model: ModelSpec) -> list[tuple[str, str]]:
    """(field, message) for each way ``model`` cannot be built for ``spec``; empty when it can."""
    where = f"workload.models.{model.name}"
    arch = CATALOGUE.get(model.arch)
    if arch is None:
        return [(f"{where}.arch", f"unknown arch {model.arch!r}; known: {', '.join(CATALOGUE)}")]
    out: list[tuple[str, str]] = []
    allowed = (*arch.options, *WORKLOADS[spec.workload.dataset.layout].source_options)
    for key in sorted(set(model.options) - set(allowed)):
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        known = ", ".join(allowed) or "none"
        out.append((f"{where}.options.{key}", f"{model.arch} has no option {key!r} ({hint}known: {known})"))
    upsample = model.options.get("upsample")
    if "upsample" in arch.options and upsample is not None and upsample not in UPSAMPLE_VALUES:
        out.append((f"{where}.options.upsample",
                    f"must be {' or '.join(UPSAMPLE_VALUES)} (transposed conv, or the seed's nearest "
                    f"UpSampling2D), got {upsample!r}"))
    h, w = spec.workload.dataset.image_size
    if arch.halves:
        levels = len(model.channels)
        if levels < 2:
            out.append((f"{where}.channels", f"needs at least 2 levels, got {list(model.channels)}"))
        elif h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
            factor = 2 ** (levels - 1)
            out.append(("workload.dataset.image_size",
                        f"{h}x{w} must be divisible by {factor} for the {levels} levels of model {model.name} "
                        f"({model.arch}); use a multiple of {factor} or fewer channels"))
    if arch.patch is not None:
        option, default = arch.patch
        patch = model.options.get(option, default)
        if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
            out.append((f"{where}.options.{option}", f"must be a whole number of pixels, got {patch!r}"))
        elif h % patch or w % patch:
            out.append(("workload.dataset.image_size",
                        f"{h}x{w} is not a multiple of the {patch}-pixel patches of model {model.name} "
                        f"({model.arch}); set image_size or options.{option}"))
    return out

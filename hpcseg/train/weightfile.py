"""A local weights file read safely and matched against a model whose names it shares.

Why a match and not ``load_state_dict(strict=False)``: a non-strict load of the wrong file loads a few
tensors that happen to share a name and shape, logs a line nobody reads, and the job spends its queue slot
training from (mostly) random weights. Here every tensor of the model except its output layer must come
from the file, with the right shape, or the load is refused with one line naming the file and the first
tensor that does not fit, unless the model says ``allow_partial_weights: true``. The output layer is
exempt because fine-tuning with another number of classes replaces it; it is loaded when it fits.

Used for every arch without a key map of its own (the U-Nets and every workload's segmentation models); the classifiers
whose ImageNet files come in torchvision's or timm's names map them first (a workload's ``weights``
module). :func:`refuse_reason` lets ``hpcseg check`` refuse a file before the queue: it builds the model on
torch's meta device (shapes only, no memory), which is why this module is imported only when a job names
weights.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpcseg.errors import HpcsegError

_COUNTERS = ("num_batches_tracked",)  # BatchNorm step counters: carried along when present, never required


SAFETENSORS_MAGIC = b"{"  # a safetensors file: 8-byte little-endian header length, then a JSON header


def is_safetensors(path: str) -> bool:
    """By content, not suffix: a renamed file is still read by what it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == SAFETENSORS_MAGIC and int.from_bytes(head[:8], "little") > 1


def read_state_dict(path: str, model_name: str) -> dict[str, Any]:
    """The tensors of a local checkpoint: a safetensors file (timm's and Hugging Face's format), or a
    ``torch.save`` file read with ``weights_only=True``. Neither runs code from the file.

    Accepts a bare state dict, one wrapped as ``model``/``state_dict``/``model_state_dict`` (hpcseg's own
    checkpoints, Lightning's, common scripts'), and DataParallel/DDP's ``module.`` prefix."""
    import torch

    if is_safetensors(path):
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except Exception as exc:  # a truncated or damaged file: its header promises more than is there
            raise HpcsegError(f"{path}: cannot read the weights of model {model_name} (a damaged safetensors "
                              f"file: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}); "
                              f"copy it again") from None
        return _unprefixed(path, model_name, state)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of junk before failing on it
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise HpcsegError(f"{path}: weights file of model {model_name} not found; copy it to the cluster first") from None
    except Exception as exc:  # pickle, zip and torch errors all mean "not a usable weights file"
        # torch's own text advises weights_only=False, i.e. running code from the file: not advice to pass on
        why = "not a file torch.save wrote" if isinstance(exc, pickle.UnpicklingError) else (
            str(exc).splitlines()[0].split(". ")[0] if str(exc) else exc.__class__.__name__)
        raise HpcsegError(f"{path}: cannot read the weights of model {model_name} ({why}); "
                          f"give a state dict saved with torch.save or safetensors") from None
    for wrapper in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return _unprefixed(path, model_name, state)


def _unprefixed(path: str, model_name: str, state: Any) -> dict[str, Any]:
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise HpcsegError(f"{path}: not a state dict of tensors (model {model_name}); save model.state_dict()")
    return {(k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in state.items()}


def output_layer(net: Any) -> str:
    """The prefix of the model's output layer: the last module, in registration order, owning parameters."""
    last = ""
    for name, module in net.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    return f"{last}." if last else ""


@dataclass
class Fit:
    """How a file's tensors (by name and shape) fill a model; the output layer is counted apart."""

    head: str
    loadable: list[str] = field(default_factory=list)    # ours, present in the file with our shape
    missing: list[str] = field(default_factory=list)     # ours (head excluded), absent from the file
    mismatched: list[str] = field(default_factory=list)  # "key: file (shape) vs model (shape)", head excluded
    unused: list[str] = field(default_factory=list)      # the file's, matching nothing of ours
    required: int = 0                                    # our tensors that must come from the file

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        got = len([k for k in self.loadable if not k.startswith(self.head) and not k.endswith(_COUNTERS)])
        head = "loaded" if any(k.startswith(self.head) for k in self.loadable) else "not loaded"
        return (f"{got}/{self.required} tensors ({len(self.missing)} missing, {len(self.mismatched)} "
                f"shape-mismatched, {len(self.unused)} unused in the file; output layer {self.head.rstrip('.')} "
                f"{head})")


def match(source: Mapping[str, tuple[int, ...]], ours: Mapping[str, tuple[int, ...]], head: str) -> Fit:
    fit = Fit(head)
    for key, shape in ours.items():
        counted = not key.startswith(head) and not key.endswith(_COUNTERS)
        fit.required += counted
        if key not in source:
            if counted:
                fit.missing.append(key)
        elif tuple(source[key]) == tuple(shape):
            fit.loadable.append(key)
        elif counted:
            fit.mismatched.append(f"{key}: file {tuple(source[key])} vs model {tuple(shape)}")
    fit.unused = [k for k in source if k not in ours]
    return fit


def check(path: str, model: Any, state: Mapping[str, Any], ours: Mapping[str, tuple[int, ...]],
          head: str) -> Fit:
    """Raise the one-line refusal unless the file fits (or the model allows a partial load)."""
    fit = match({k: tuple(v.shape) for k, v in state.items()}, ours, head)
    # A step counter fits every BatchNorm and a one-class output bias fits any binary head: neither counts.
    real = [k for k in fit.loadable if not k.endswith(_COUNTERS) and not k.startswith(head)]
    if real and (fit.complete or model.allow_partial_weights):
        return fit
    if not real:
        held = f"it holds {len(state)} tensor(s), e.g. {next(iter(state))}"
        raise HpcsegError(f"{path}: no tensor of model {model.name} ({model.arch}) is in this file with its shape "
                          f"({held}): it was saved from another architecture or other channels; give a "
                          f"checkpoint of {model.arch} with this model's channels")
    first = (fit.mismatched or [f"missing {k}" for k in fit.missing])[0]
    raise HpcsegError(f"{path}: weights fit {fit.summary()} of model {model.name} ({model.arch}), e.g. {first}; "
                      f"give a checkpoint of this arch with the same channels, or set "
                      f"workload.models.{model.name}.allow_partial_weights: true to train on anyway")


def load_into(net: Any, model: Any) -> Fit:
    """Load ``model.weights`` into ``net`` (refused unless it fits); returns the fit, for the log."""
    own = net.state_dict()
    state = read_state_dict(str(model.weights), model.name)
    fit = check(str(model.weights), model, state, {k: tuple(v.shape) for k, v in own.items()}, output_layer(net))
    net.load_state_dict({k: state[k] for k in fit.loadable}, strict=False)
    return fit


def refuse_reason(spec: Any, model: Any) -> str | None:
    """For ``hpcseg check``: why ``model.weights`` would be refused on the node, or None if it fits."""
    import torch

    from hpcseg.train.models import ARCHS, resolve

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = resolve(ARCHS[model.arch], f"model {model.name} (arch {model.arch})")(spec, model)
    try:
        state = read_state_dict(str(model.weights), model.name)
        check(str(model.weights), model, state, {k: tuple(v.shape) for k, v in net.state_dict().items()},
              output_layer(net))
    except HpcsegError as exc:
        return exc.message
    return None

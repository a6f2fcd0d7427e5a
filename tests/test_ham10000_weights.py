"""ImageNet checkpoints in torchvision's and timm's layouts load into our four classifiers with 100 %
backbone coverage; a file that does not fit is refused by training and by ``hpcseg check``.

The state dicts are written by the tests from tests/fixtures/torchvision_state_dicts.json: torchvision
0.29.1's exact key names, shapes and dtypes (dumped once outside the repo; torchvision is not installed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from hpcseg.cli import main
from hpcseg.errors import HpcsegError
from hpcseg.spec import load_job
from hpcseg.train.models import build_model
from hpcseg.workloads.ham10000.models import build
from hpcseg.workloads.ham10000.weights import coverage

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "ham10000_comparison.yaml"
FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "torchvision_state_dicts.json").read_text())["models"]
ARCHS = ("resnet50", "densenet121", "efficientnet_b3", "vit_b_16")


def spec_224(*sets: str):
    return load_job(JOB, None, ["workload.dataset.image_size=224", *sets]).spec


def tv_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(s) for k, s, _ in FIXTURE[arch]}


def our_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    spec = spec_224()
    with torch.device("meta"):  # shapes only: no memory, no init cost
        net = build(spec, spec.model(arch))
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def write_state(path: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked")
                 else torch.randn(s, generator=g)) for k, s in shapes.items()}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_layout_covers_the_whole_backbone(arch: str) -> None:
    cov = coverage(arch, tv_shapes(arch), our_shapes(arch))
    assert cov.complete and cov.fraction == 1.0, cov.summary()
    assert cov.unused == []  # every torchvision tensor but the 1000-class head has a place


def test_densenet_old_torchvision_keys_norm_dot_1() -> None:
    """The original densenet121-a639ec97.pth spells denselayer modules norm.1 / conv.1."""
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): s for k, s in tv_shapes("densenet121").items()}
    assert any(".norm.1." in k for k in old)
    cov = coverage("densenet121", old, our_shapes("densenet121"))
    assert cov.complete, cov.summary()


def _timm_vit(key: str) -> str:
    """torchvision -> timm ViT names (the names timm's vit_base_patch16_224 saves)."""
    fixed = {"class_token": "cls_token", "encoder.pos_embedding": "pos_embed", "encoder.ln.weight": "norm.weight",
             "encoder.ln.bias": "norm.bias", "heads.head.weight": "head.weight", "heads.head.bias": "head.bias"}
    if key in fixed:
        return fixed[key]
    key = key.replace("conv_proj.", "patch_embed.proj.")
    m = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.*)$", key)
    if not m:
        return key
    rest = (m[2].replace("ln_1.", "norm1.").replace("ln_2.", "norm2.").replace("self_attention.in_proj_weight",
            "attn.qkv.weight").replace("self_attention.in_proj_bias", "attn.qkv.bias")
            .replace("self_attention.out_proj.", "attn.proj.").replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2."))
    return f"blocks.{m[1]}.{rest}"


def _timm_effnet(key: str) -> str:
    """torchvision -> timm EfficientNet-B3 names (conv_stem, blocks.S.B.conv_dw, ..., conv_head)."""
    top = {"features.0.0.": "conv_stem.", "features.0.1.": "bn1.", "features.8.0.": "conv_head.", "features.8.1.": "bn2.",
           "classifier.1.": "classifier."}
    for a, b in top.items():
        if key.startswith(a):
            return b + key[len(a):]
    m = re.match(r"features\.(\d)\.(\d+)\.block\.(\d)\.(.*)$", key)
    assert m, key
    stage, block, part, rest = int(m[1]) - 1, m[2], int(m[3]), m[4]
    names = ([("conv_dw.", "bn1."), "se", ("conv_pw.", "bn2.")] if stage == 0 else
             [("conv_pw.", "bn1."), ("conv_dw.", "bn2."), "se", ("conv_pwl.", "bn3.")])[part]
    if names == "se":
        return f"blocks.{stage}.{block}.se." + rest.replace("fc1.", "conv_reduce.").replace("fc2.", "conv_expand.")
    conv, bn = names
    return f"blocks.{stage}.{block}." + (conv if rest.startswith("0.") else bn) + rest[2:]


@pytest.mark.parametrize(("arch", "to_timm"), [("vit_b_16", _timm_vit), ("efficientnet_b3", _timm_effnet),
                                               ("resnet50", lambda k: k), ("densenet121", lambda k: k)])
def test_timm_layout_covers_the_whole_backbone(arch: str, to_timm) -> None:
    timm = {to_timm(k): s for k, s in tv_shapes(arch).items()}
    cov = coverage(arch, timm, our_shapes(arch))
    assert cov.complete, cov.summary() + str(cov.missing[:3] + cov.mismatched[:3])


def test_densenet_file_loads_values_through_the_map(tmp_path: Path) -> None:
    """A real file (old key form, DataParallel prefix, wrapped in {"state_dict": ...}) lands in the right tensors."""
    shapes = {"module." + re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): s
              for k, s in tv_shapes("densenet121").items()}
    path = tmp_path / "densenet121.pth"
    state = write_state(path, shapes)
    torch.save({"state_dict": state, "epoch": 90}, path)
    spec = spec_224(f"workload.models.densenet121.weights={path}")
    net = build_model(spec, spec.model("densenet121"))
    ours = net.state_dict()
    key = "module.features.denseblock2.denselayer3.conv.2.weight"
    assert torch.equal(ours["features.denseblock2.denselayer3.layers.conv2.weight"], state[key])
    assert torch.equal(ours["features.norm5.running_var"], state["module.features.norm5.running_var"])
    assert ours["class_layers.out.weight"].shape[0] == 7  # the head stays ours


def test_wrong_architecture_file_is_refused_by_training_and_check(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A ResNet-50 file given to DenseNet-121: one line naming the file, what fits and what it looks like."""
    path = tmp_path / "resnet50_imagenet.pth"
    write_state(path, tv_shapes("resnet50"))
    spec = spec_224(f"workload.models.densenet121.weights={path}")
    with pytest.raises(HpcsegError) as err:
        build_model(spec, spec.model("densenet121"))
    msg = err.value.message
    assert str(path) in msg and "0/604 backbone tensors" in msg and "looks like resnet50" in msg
    assert "allow_partial_weights" in msg and "\n" not in msg

    data = tmp_path / "data"
    from hpcseg.workloads.ham10000.synth import make_ham10000

    make_ham10000(data, n=14, size=32, seed=0)
    job = yaml.safe_load(JOB.read_text())
    job["workload"]["dataset"].update(root=str(data), expected_count=14, image_size=224)
    job["workload"]["models"] = [{"name": "densenet121", "arch": "densenet121", "weights": str(path)}]
    job["container"]["runtime"] = "none"
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    assert main(["check", str(tmp_path / "job.yaml")]) == 2
    out = capsys.readouterr()
    assert "looks like resnet50" in out.out + out.err


def test_partial_file_is_an_error_unless_allowed(tmp_path: Path) -> None:
    shapes = tv_shapes("resnet50")
    del shapes["layer4.2.conv3.weight"]
    path = tmp_path / "partial.pth"
    write_state(path, shapes)
    spec = spec_224(f"workload.models.resnet50.weights={path}")
    with pytest.raises(HpcsegError, match=r"264/265 backbone tensors.*missing layer4.2.conv3.weight"):
        build_model(spec, spec.model("resnet50"))
    spec = spec_224(f"workload.models.resnet50.weights={path}", "workload.models.resnet50.allow_partial_weights=true")
    net = build_model(spec, spec.model("resnet50"))
    assert net.state_dict()["layer1.0.conv1.weight"].abs().sum() > 0


def test_timm_safetensors_file_loads_and_a_truncated_one_is_refused(tmp_path: Path) -> None:
    """timm's checkpoints on the Hugging Face hub are model.safetensors files in timm's names: read by
    content (whatever the suffix), mapped, loaded; a file cut short is one line naming it, not a traceback."""
    from safetensors.torch import save_file

    shapes = {_timm_effnet(k): s for k, s in tv_shapes("efficientnet_b3").items()}
    g = torch.Generator().manual_seed(0)
    state = {k: (torch.zeros(s, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g))
             for k, s in shapes.items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    renamed = tmp_path / "efficientnet_b3.pth"  # a safetensors file under a .pth name is still read as one
    renamed.write_bytes(path.read_bytes())
    for p in (path, renamed):
        spec = spec_224(f"workload.models.efficientnet_b3.weights={p}")
        net = build_model(spec, spec.model("efficientnet_b3"))
        assert torch.equal(net.state_dict()["_blocks.1.2._depthwise_conv.weight"], state["blocks.1.0.conv_dw.weight"])
        assert torch.equal(net.state_dict()["_conv_head.weight"], state["conv_head.weight"])

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    spec = spec_224(f"workload.models.efficientnet_b3.weights={cut}")
    with pytest.raises(HpcsegError) as err:
        build_model(spec, spec.model("efficientnet_b3"))
    assert str(cut) in err.value.message and "damaged safetensors" in err.value.message
    assert "\n" not in err.value.message

"""Seed 004's U-Net family (hpcseg/train/models.py): the networks the seed trained, at the seed's sizes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from hpcseg.archs import model_problems  # noqa: E402
from hpcseg.errors import HpcsegError  # noqa: E402
from hpcseg.spec import JobSpec, find_job, load_job  # noqa: E402
from hpcseg.train.models import (  # noqa: E402
    AttentionGate,
    DoubleConv,
    NoGate,
    ResidualBlock,
    UNet2D,
    build_model,
    count_parameters,
)

SEED_FILTERS = (64, 128, 256, 512, 1024)  # the seed's FILTER_NUM = 64, doubled over 5 levels


# ------------------------------------------------------------------------ the seed's Keras models, counted


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout  # Keras Conv2D / Conv2DTranspose: weights + bias


def _bn(c: int) -> int:
    return 2 * c  # trainable gamma and beta (the moving mean/variance are Keras' non-trainable params)


def _conv_block(cin: int, c: int) -> int:
    return _conv(3, cin, c) + _bn(c) + _conv(3, c, c) + _bn(c)


def _res_conv_block(cin: int, c: int) -> int:
    return _conv_block(cin, c) + _conv(1, cin, c) + _bn(c)


def _gate(c: int, coarse: int) -> int:
    """gating_signal(coarse -> c) + attention_block(x: c, gating: c, inter_shape: c)."""
    gating = _conv(1, coarse, c) + _bn(c)
    theta, phi, up_g, psi = _conv(2, c, c), _conv(1, c, c), _conv(3, c, c), _conv(1, c, 1)
    return gating + theta + phi + up_g + psi + _conv(1, c, c) + _bn(c)


def keras_trainable(block, attention: bool, filters=SEED_FILTERS, in_channels: int = 1) -> int:
    """Trainable parameters of the seed's Keras UNet / Attention_UNet / Attention_ResUNet."""
    n, cin = 0, in_channels
    for c in filters:  # encoder: one block per level (max-pooling has no weights)
        n, cin = n + block(cin, c), c
    for i in range(len(filters) - 2, -1, -1):  # decoder: UpSampling2D (no weights), concat, block
        c, coarse = filters[i], filters[i + 1]
        n += (_gate(c, coarse) if attention else 0) + block(coarse + c, c)
    return n + _conv(1, filters[0], 1) + _bn(1)  # 1x1 conv head, BatchNorm, sigmoid


# The seed (004) gives no parameter counts; its README trains the three models of its models.py
# (224_225_226_models.py, DigitalSreeni's Keras U-Nets) at IMAGE_SIZE 256, CHANNELS 1, one sigmoid
# output, FILTER_NUM 64, FILTER_SIZE 3, batch_norm=True. keras_trainable() above recounts Keras'
# "Trainable params" of those models layer by layer; these are its figures:
KERAS_UNET = 31_389_571
KERAS_ATTENTION_UNET = 37_317_895
KERAS_ATTENTION_RESUNET = 39_067_591


def seed_spec() -> JobSpec:
    """microbead_optimized as shipped: the seed's settings (256 px, 1 channel, default 64..1024 widths)."""
    return load_job(find_job("microbead_optimized"), None, []).spec


def count(spec: JobSpec, name: str, **update) -> int:
    model = spec.model(name)
    if update:
        model = model.model_copy(update=update)
    with torch.device("meta"):  # the count without allocating ~150 MB of weights per model
        return count_parameters(build_model(spec, model))


def test_keras_recount_matches_the_pinned_figures() -> None:
    """How the figures were derived, per level c (64..1024) and cin its input width:

    conv_block(cin, c) = (9·cin·c + c) + (9·c·c + c) + 2 BN·2c; res_conv_block adds the 1x1 shortcut conv
    cin·c + c and its BN 2c. Encoder: one block per level from 1 input channel. Decoder, for each of the 4
    skips c below a coarser width C: UpSampling2D (no weights), concatenate C + c channels, block to c;
    the attention variants first gate the skip: gating_signal 1x1 conv C->c + BN, then attention_block
    with inter_shape c: theta 2x2 conv c->c, phi 1x1 conv c->c, 3x3 Conv2DTranspose c->c, psi 1x1 conv
    c->1, result 1x1 conv c->c + BN. Head: 1x1 conv 64->1 + BN(1). BN counts gamma and beta only, what
    Keras reports as trainable and torch as parameters (Keras' totals add the moving statistics:
    2 per BN channel, 11,778 for the UNet, i.e. 31,401,349 in all)."""
    assert keras_trainable(_conv_block, attention=False) == KERAS_UNET
    assert keras_trainable(_conv_block, attention=True) == KERAS_ATTENTION_UNET
    assert keras_trainable(_res_conv_block, attention=True) == KERAS_ATTENTION_RESUNET


@pytest.mark.parametrize("name,expected", [("unet", KERAS_UNET), ("attention_unet", KERAS_ATTENTION_UNET),
                                           ("attention_resunet", KERAS_ATTENTION_RESUNET)])
def test_parameter_counts_at_the_seed_settings_are_within_10_percent_of_the_seed(name: str, expected: int) -> None:
    """As shipped: unet up-convolves (2x2 transposed conv to the skip's width: -1.1 % against the seed's
    UpSampling2D model), the attention models upsample as the seed did."""
    spec = seed_spec()
    assert spec.workload.dataset.image_size == (256, 256) and spec.workload.dataset.channels == 1
    n = count(spec, name)
    assert abs(n - expected) <= 0.10 * expected, (name, n, expected)


@pytest.mark.parametrize("name,expected", [("unet", KERAS_UNET), ("attention_unet", KERAS_ATTENTION_UNET),
                                           ("attention_resunet", KERAS_ATTENTION_RESUNET)])
def test_with_nearest_upsampling_each_model_is_the_seeds_less_its_output_batchnorm(name: str, expected: int) -> None:
    """Layer for layer the seed's network: the only difference is the BatchNorm on the one output logit
    (gamma and beta), left out on purpose (models.py explains why)."""
    assert count(seed_spec(), name, options={"upsample": "nearest"}) == expected - 2


def test_model_channels_set_the_widths() -> None:
    spec = seed_spec()
    net = build_model(spec, spec.model("unet").model_copy(update={"channels": [8, 16, 32]}))
    widths = [[m.out_channels for m in enc.modules() if isinstance(m, nn.Conv2d)] for enc in net.encoders]
    assert widths == [[8, 8], [16, 16], [32, 32]]
    assert [m.out_channels for m in net.ups] == [16, 8]
    assert count(spec, "unet", channels=[8, 16, 32]) < count(spec, "unet", channels=[16, 32, 64])


# ------------------------------------------------------------------------ the classic U-Net's structure


def test_classic_unet_is_two_conv_bn_relu_per_level_maxpool_and_up_convolution() -> None:
    net = UNet2D(1, 1, [4, 8, 16, 32], dropout=0.3)
    assert isinstance(net.pool, nn.MaxPool2d) and net.pool.kernel_size == 2
    for block in [*net.encoders, *net.decoders]:
        assert isinstance(block, DoubleConv)
        layers = [m for m in block.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout))]
        assert [type(m) for m in layers] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.Dropout]
        assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in layers if isinstance(m, nn.Conv2d))
    for up in net.ups:
        assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (2, 2) and up.stride == (2, 2)
    assert all(isinstance(g, NoGate) for g in net.gates)
    assert not any(isinstance(m, (AttentionGate, ResidualBlock)) for m in net.modules())


def test_classic_unet_concatenates_the_encoder_output_as_the_skip() -> None:
    """The decoder's input at each level is [up-convolved coarser map, the encoder output at that level]."""
    torch.manual_seed(0)
    net = UNet2D(1, 2, [4, 8, 16]).eval()
    enc_out, dec_in = {}, {}
    for i, enc in enumerate(net.encoders):
        enc.register_forward_hook(lambda m, a, out, i=i: enc_out.__setitem__(i, out))
    for j, dec in enumerate(net.decoders):
        dec.register_forward_pre_hook(lambda m, a, j=j: dec_in.__setitem__(j, a[0]))
    out = net(torch.randn(2, 1, 16, 16))
    assert out.shape == (2, 2, 16, 16)
    for j, level in enumerate([1, 0]):  # decoders run from the coarsest skip up
        width = [4, 8, 16][level]
        assert dec_in[j].shape == (2, 2 * width, 16 >> level, 16 >> level)
        assert torch.equal(dec_in[j][:, width:], enc_out[level])


def test_attention_models_gate_every_skip_and_the_residual_one_has_shortcuts() -> None:
    spec = seed_spec()
    att = build_model(spec, spec.model("attention_unet").model_copy(update={"channels": [4, 8, 16]}))
    res = build_model(spec, spec.model("attention_resunet").model_copy(update={"channels": [4, 8, 16]}))
    for net, block in ((att, DoubleConv), (res, ResidualBlock)):
        assert all(isinstance(g, AttentionGate) for g in net.gates) and len(net.gates) == 2
        assert all(isinstance(b, block) for b in [*net.encoders, *net.decoders])
        assert all(isinstance(u, nn.Upsample) for u in net.ups)  # the seed's UpSampling2D
    assert all(b.shortcut.conv.kernel_size == (1, 1) for b in res.encoders)


def test_attention_gate_scales_the_skip_by_coefficients_in_0_1() -> None:
    """With the output 1x1 conv-BN made the identity, the gate returns skip · alpha, alpha in (0, 1),
    one alpha per coarse pixel (constant on each 2x2 cell)."""
    torch.manual_seed(1)
    gate = AttentionGate(skip=3, coarse=6).eval()
    conv, bn = gate.out.conv, gate.out.adn.N
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1 - bn.eps)
    skip, coarse = torch.rand(1, 3, 8, 8) + 0.5, torch.randn(1, 6, 4, 4)
    alpha = gate(skip, coarse) / skip
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-5)  # one coefficient for all channels
    assert (alpha > 0).all() and (alpha < 1).all()
    cells = alpha[0, 0].unfold(0, 2, 2).unfold(1, 2, 2).reshape(4, 4, 4)
    assert torch.allclose(cells, cells[..., :1].expand_as(cells), atol=1e-5)


def test_residual_unet_is_monais_residual_unet() -> None:
    from monai.networks.nets import UNet

    spec = seed_spec()
    model = spec.model("unet").model_copy(update={"arch": "residual_unet", "channels": [4, 8, 16],
                                                  "options": {"num_res_units": 1}})
    assert model_problems(spec, model) == []
    net = build_model(spec, model)
    assert isinstance(net, UNet) and net.num_res_units == 1


# ------------------------------------------------------------------------ options


def test_upsample_option_is_checked_before_the_queue_and_by_the_builder() -> None:
    spec = seed_spec()
    bad = spec.model("unet").model_copy(update={"options": {"upsample": "bilinear"}})
    problems = model_problems(spec, bad)
    assert [w for w, _ in problems] == ["workload.models.unet.options.upsample"]
    assert "deconv or nearest" in problems[0][1] and "'bilinear'" in problems[0][1]
    with pytest.raises(HpcsegError, match="upsample must be one of deconv, nearest"):
        build_model(spec, bad.model_copy(update={"channels": [4, 8]}))
    typo = spec.model("unet").model_copy(update={"options": {"num_res_units": 2}})
    assert [w for w, _ in model_problems(spec, typo)] == ["workload.models.unet.options.num_res_units"]

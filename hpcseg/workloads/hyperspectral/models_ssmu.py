"""SSMU-Net (seed 000): sinc spectral filters -> Mamba -> pooling -> projection -> classic 2-D U-Net.

The shape follows the seed's own SSMU-Net code. Each pixel's spectrum is a sequence. A bank of learnable
sinc band-pass filters (``options.sinc_filters``; SincNet-style: only each filter's low cut-off and
bandwidth are learned, so the filters stay interpretable as spectral bands) runs along the band axis;
``options.mamba_layers`` Mamba layers (d_model = the number of filters, residual + dropout + a shared
post-LayerNorm, as in the seed) model the sequence of filter responses; ``options.pooling`` (attention |
mean) reduces it to one vector per pixel, projected linearly to ``options.embed_dim`` channels; a classic
U-Net (two conv3x3+BN+ReLU per level, max-pool, transposed-conv up, concatenated skips) with
``model.channels`` levels segments that feature map into the tissue classes. At the seed's overnight
settings (24 filters, embedding 32, channels 32..512, 2 layers, attention) that is 7.78M parameters; at
its fast-mode settings (16, 16, 16..256, 1 layer, mean) 1.95M, the seed's "1.9M fast mode".

Mamba. In the container (CUDA, ``mamba-ssm`` installed) each layer *is* a ``mamba_ssm.Mamba`` and runs
its fused CUDA kernels whenever the input is on the GPU. Everywhere else (CPU runs, tests, no
mamba-ssm) the same layer runs :func:`mamba_reference_forward`, a pure-PyTorch selective scan with
Mamba-1 semantics and mamba-ssm's parameter names and shapes (in_proj, conv1d, x_proj, dt_proj, A_log,
D, out_proj), so a checkpoint moves between the two paths. The reference path is for correctness and
small CPU runs; it scans the band sequence step by step and is far slower than the kernels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hpcseg.spec import JobSpec, ModelSpec

try:  # present in the CUDA container (setup.cfg extra "cuda"); absent on CPU-only installs
    from mamba_ssm import Mamba as _CudaMamba
except Exception:  # ImportError, or a build without its CUDA extension
    _CudaMamba = None


# ------------------------------------------------------------------------------------------ sinc bank


class SincBandpass1d(nn.Module):
    """Learnable band-pass filters along the spectral axis, parameterised by (low cut-off, bandwidth).

    Frequencies are in cycles per band index (Nyquist 0.5). A filter is the difference of two windowed
    low-pass sincs, normalised to unit pass-band gain so filters of different widths start comparable.
    Input (N, 1, L) -> output (N, filters, ceil(L / stride)).
    """

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, min_band: float = 0.01):
        super().__init__()
        if kernel_size % 2 == 0:
            kernel_size += 1
        self.kernel_size, self.stride, self.min_band = kernel_size, stride, min_band
        edges = torch.linspace(0.0, 0.5 - min_band, filters + 1)
        self.low = nn.Parameter(edges[:-1].clone())
        self.band = nn.Parameter((edges[1:] - edges[:-1]).clamp_min(min_band))
        n = torch.arange(kernel_size, dtype=torch.float32) - kernel_size // 2
        self.register_buffer("n", n, persistent=False)
        self.register_buffer("window", torch.hamming_window(kernel_size, periodic=False), persistent=False)

    def kernels(self) -> torch.Tensor:
        f1 = self.low.abs()
        f2 = (f1 + self.band.abs() + self.min_band).clamp(max=0.5)
        n = self.n[None, :]
        # torch.sinc(x) = sin(pi x) / (pi x): an ideal low-pass at f has taps 2 f sinc(2 f n).
        lp2 = 2 * f2[:, None] * torch.sinc(2 * f2[:, None] * n)
        lp1 = 2 * f1[:, None] * torch.sinc(2 * f1[:, None] * n)
        return ((lp2 - lp1) * self.window / (2 * (f2 - f1))[:, None].clamp_min(1e-4)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.kernels(), stride=self.stride, padding=self.kernel_size // 2)


# ------------------------------------------------------------------------------------------ Mamba


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The Mamba-1 recurrence, h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t + D u_t, gated by
    silu(z). Shapes as mamba-ssm's selective_scan_fn: u, delta, z (N, Di, L); A (Di, S); B, C (N, S, L);
    D (Di). ``delta`` is already softplus-ed. Loops over L only; each step is vectorised over N, Di, S."""
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    du = delta * u
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[:, :, t, None] * A) * h + du[:, :, t, None] * B[:, None, :, t]   # (N, Di, S)
        ys.append(torch.bmm(h, C[:, :, t, None]).squeeze(-1))                               # (N, Di)
    y = torch.stack(ys, dim=-1) + u * D[None, :, None]
    return y * F.silu(z)


def mamba_reference_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mamba block forward in plain PyTorch on a module with mamba-ssm's parameters; x (N, L, d_model)."""
    seqlen = x.shape[1]
    xz = m.in_proj(x).transpose(1, 2)                               # (N, 2 Di, L)
    u, z = xz.chunk(2, dim=1)
    u = F.silu(m.conv1d(u)[..., :seqlen])                           # causal depthwise conv
    dt, B, C = m.x_proj(u.transpose(1, 2)).split([m.dt_rank, m.d_state, m.d_state], dim=-1)
    delta = F.softplus(m.dt_proj(dt)).transpose(1, 2)               # (N, Di, L), dt_proj bias included
    dtype = torch.promote_types(u.dtype, torch.float32)  # the scan in at least fp32, as mamba-ssm does
    A = -torch.exp(m.A_log.to(dtype))
    y = selective_scan_ref(u, delta, A, B.transpose(1, 2), C.transpose(1, 2), m.D.to(dtype), z)
    return m.out_proj(y.transpose(1, 2))


class MambaRef(nn.Module):
    """mamba_ssm.Mamba's parameters and initialisation, with the pure-PyTorch forward."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1):
        super().__init__()
        self.d_model, self.d_state, self.d_inner = d_model, d_state, expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        di = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(di, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, di, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        dt = torch.exp(torch.rand(di) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp_min(1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mamba_reference_forward(self, x)


if _CudaMamba is not None:

    class DispatchMamba(_CudaMamba):  # type: ignore[misc, valid-type]
        """A real mamba_ssm.Mamba: its CUDA kernels on GPU inputs, the reference scan on CPU inputs."""

        def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
            if x.is_cuda:
                return super().forward(x, *args, **kwargs)
            return mamba_reference_forward(self, x)


#: What :func:`mamba_path` returns, also written to train.log and result.json.
KERNELS = "mamba_ssm CUDA kernels"
REFERENCE = "pure-PyTorch selective scan"


def mamba_path(device: torch.device) -> str:
    """The path a Mamba layer takes on ``device``: the fused kernels only with mamba-ssm installed and
    the input on a GPU (see DispatchMamba), the reference scan everywhere else."""
    if _CudaMamba is not None and device.type == "cuda":
        return KERNELS
    why = "mamba-ssm not installed" if _CudaMamba is None else "input not on a GPU"
    return f"{REFERENCE} ({why})"


def uses_mamba(model: nn.Module) -> bool:
    """Whether any layer of ``model`` is a Mamba layer of this module (either path)."""
    kinds = (MambaRef,) if _CudaMamba is None else (MambaRef, _CudaMamba)
    return any(isinstance(m, kinds) for m in model.modules())


def make_mamba(d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> nn.Module:
    if _CudaMamba is not None:
        return DispatchMamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return MambaRef(d_model, d_state, d_conv, expand)


class AttentionPool(nn.Module):
    """Softmax-weighted sum over the sequence with a small tanh scorer (the seed's AttentionPooling):
    learns which spectral positions matter, the seed's switch from mean pooling."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, max(dim // 2, 1)), nn.Tanh(), nn.Linear(max(dim // 2, 1), 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, D) -> (N, D)
        w = torch.softmax(self.score(x).squeeze(-1), dim=-1)
        return torch.einsum("nl,nld->nd", w, x)


class SpectralMamba(nn.Module):
    """The seed's SpectralMambaBlock: per layer x = norm(x + dropout(mamba(x))), one LayerNorm shared by
    the layers (post-norm, as the seed wrote it), over the sequence of sinc responses (d_model = filters)."""

    def __init__(self, dim: int, layers: int, d_state: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(make_mamba(dim, d_state=d_state) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = self.norm(x + self.dropout(layer(x)))
        return x


# ------------------------------------------------------------------------------------------ U-Net


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + BatchNorm + ReLU: one level of the classic U-Net."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ClassicUNet(nn.Module):
    """The seed's U-Net: DoubleConv per level, max-pool down, 2x2 transposed conv up, concatenated skips,
    1x1 output conv. ``channels`` lists every level, the last one the bottleneck (the seed: base x 1, 2, 4,
    8, 16). Inputs whose sides do not divide by 2^(levels-1) are zero-padded and the logits cropped back."""

    def __init__(self, cin: int, num_classes: int, channels: list[int]):
        super().__init__()
        self.down = nn.ModuleList()
        for c in channels:
            self.down.append(DoubleConv(cin, c))
            cin = c
        pairs = list(zip(channels[:0:-1], channels[-2::-1], strict=True))  # (deeper, shallower)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in pairs)
        self.dec = nn.ModuleList(DoubleConv(2 * b, b) for _, b in pairs)
        self.out = nn.Conv2d(channels[0], num_classes, 1)
        self.multiple = 2 ** (len(channels) - 1)
        for m in self.modules():  # the seed's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for up, dec, skip in zip(self.up, self.dec, skips[-2::-1], strict=True):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.out(x)[..., :h, :w]


# ------------------------------------------------------------------------------------------ SSMU-Net


class SSMUNet(nn.Module):
    """Per pixel: sinc filters over the spectrum -> Mamba over the band sequence (d_model = filters) ->
    pooling over bands -> linear projection to ``embed_dim``; then the classic U-Net over the feature map.
    This is the order of the seed's SSMU-Net code (sinc, ssm, pool, project, U-Net)."""

    def __init__(self, bands: int, num_classes: int, channels: list[int], dropout: float = 0.0, *,
                 sinc_filters: int = 24, embed_dim: int = 32, mamba_layers: int = 2, pooling: str = "attention",
                 sinc_kernel: int | None = None, spectral_stride: int = 1, d_state: int = 16):
        super().__init__()
        if pooling not in ("attention", "mean"):
            raise ValueError(f"options.pooling must be attention or mean, got {pooling!r}")
        if len(channels) < 2:
            raise ValueError("ssmu_net needs at least two U-Net channel counts")
        k = sinc_kernel or min(31, bands if bands % 2 else bands - 1)
        self.sinc = SincBandpass1d(sinc_filters, max(3, k), stride=spectral_stride)
        self.ssm = SpectralMamba(sinc_filters, mamba_layers, d_state, dropout)
        self.pool = AttentionPool(sinc_filters) if pooling == "attention" else None
        self.project = nn.Linear(sinc_filters, embed_dim)
        self.unet = ClassicUNet(embed_dim, num_classes, list(channels))

    def pixel_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, bands, H, W) -> (B, embed_dim, H, W): every pixel's spectrum through sinc, Mamba, pooling."""
        b, c, h, w = x.shape
        seq = self.sinc(x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c))     # (N, F, L)
        t = self.ssm(seq.transpose(1, 2))                                    # (N, L, F)
        f = self.pool(t) if self.pool is not None else t.mean(dim=1)         # (N, F)
        return self.project(f).reshape(b, h, w, -1).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(self.pixel_features(x))

    def mamba_path(self, device: torch.device | str) -> str:
        """Which Mamba implementation a forward pass on ``device`` runs (for train.log and result.json)."""
        return mamba_path(torch.device(device))


def build(spec: JobSpec, model: ModelSpec) -> nn.Module:
    o = model.options
    ds = spec.workload.dataset
    return SSMUNet(
        ds.channels, ds.num_classes, list(model.channels), float(model.dropout),
        sinc_filters=int(o.get("sinc_filters", 24)), embed_dim=int(o.get("embed_dim", 32)),
        mamba_layers=int(o.get("mamba_layers", 2)), pooling=str(o.get("pooling", "attention")),
        sinc_kernel=o.get("sinc_kernel"), spectral_stride=int(o.get("spectral_stride", 1)),
        d_state=int(o.get("d_state", 16)),
    )

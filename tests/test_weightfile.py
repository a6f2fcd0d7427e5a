"""Weights in our own names (hpcseg/train/weightfile.py): what a job's models save, they load; what does
not fit is refused before the queue and on the node with the same one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcseg.errors import HpcsegError
from hpcseg.spec import load_job
from hpcseg.train import weightfile
from hpcseg.train.models import build_model

REPO = Path(__file__).resolve().parents[1]
# Every shipped segmentation job's quick profile: each arch without a key map of its own.
JOBS = ["microbead_optimized", "microbead_mitochondria", "marida_se_unet", "marida_attention_unet", "marida_multiclass",
        "ssmu_net_overnight"]


def models_of(job: str):
    spec = load_job(REPO / "jobs" / f"{job}.yaml", "quick", []).spec
    return [(spec, m) for m in spec.workload.models]


CASES = [pytest.param(spec, m, id=f"{job}-{m.name}") for job in JOBS for spec, m in models_of(job)]


@pytest.mark.parametrize(("spec", "model"), CASES)
def test_own_checkpoint_round_trips_and_a_foreign_one_is_refused(spec, model, tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = build_model(spec, model)
    path = tmp_path / "w.pth"
    torch.save({"model": src.state_dict(), "epoch": 1}, path)  # the form hpcseg's checkpoints take
    with_weights = model.model_copy(update={"weights": str(path)})
    assert weightfile.refuse_reason(spec, with_weights) is None  # built on the meta device: shapes only
    torch.manual_seed(1)
    net = build_model(spec, with_weights)
    for key, value in src.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key

    head = weightfile.output_layer(src)
    assert head and any(k.startswith(head) for k in src.state_dict())
    body = [k for k in src.state_dict() if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    torch.save({k: v for k, v in src.state_dict().items() if k != body[len(body) // 2]}, path)
    why = weightfile.refuse_reason(spec, with_weights)
    assert why is not None and f"missing {body[len(body) // 2]}" in why and "\n" not in why
    with pytest.raises(HpcsegError, match="allow_partial_weights"):
        build_model(spec, with_weights)
    partial = with_weights.model_copy(update={"allow_partial_weights": True})
    assert weightfile.refuse_reason(spec, partial) is None
    build_model(spec, partial)

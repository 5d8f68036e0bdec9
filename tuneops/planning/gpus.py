"""Common training GPUs: memory, usable memory and dense 16-bit peak throughput.

`usable_gib` is what a process can allocate (what `torch.cuda.mem_get_info` reports free on an idle card,
rounded down): the marketing "24 GB" of an A10G is 22 GiB to PyTorch. `peak_tflops` is the dense bf16
(fp16 for the T4, which has no bf16) tensor-core peak from the vendor's data sheet, no sparsity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    usable_gib: float
    peak_tflops: float
    bf16: bool = True
    labels: tuple[str, ...] = ()   # nvidia.com/gpu.product values (GPU feature discovery) that mean this card


# Ordered from the cheapest per hour on the public clouds to the most expensive.
GPUS: tuple[Gpu, ...] = (
    Gpu("T4-16G", 16, 14.5, 65, bf16=False, labels=("Tesla-T4",)),
    Gpu("L4-24G", 24, 22.0, 121, labels=("NVIDIA-L4",)),
    Gpu("A10G-24G", 24, 22.0, 70, labels=("NVIDIA-A10G",)),
    Gpu("L40S-48G", 48, 44.0, 362, labels=("NVIDIA-L40S",)),
    Gpu("A100-40G", 40, 39.0, 312, labels=("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB")),
    Gpu("A100-80G", 80, 79.0, 312, labels=("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe")),
    Gpu("H100-80G", 80, 79.0, 989, labels=("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", "NVIDIA-H100-NVL")),
    Gpu("H200-141G", 141, 139.0, 989, labels=("NVIDIA-H200", "NVIDIA-H200-NVL")),
)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_gpu(product: str | None) -> Gpu | None:
    """The table entry for a `resources.gpu.product` label (e.g. NVIDIA-A10G, Tesla-T4) or a table name."""
    if not product:
        return None
    key = _norm(product)
    for gpu in GPUS:
        if key in {_norm(gpu.name), *(_norm(label) for label in gpu.labels)}:
            return gpu
    for gpu in GPUS:  # looser: "a100-80gb", "h100"
        family, size = gpu.name.split("-")
        if _norm(family) in key and (size[:-1] in key or not any(
                _norm(family) in _norm(g.name) and g is not gpu for g in GPUS)):
            return gpu
    return None

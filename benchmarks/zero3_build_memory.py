"""How much memory does building a model partitioned under ZeRO-3 take, against building it whole?

    PYTHONPATH=. python benchmarks/zero3_build_memory.py [--preset small] [--repeats 1]

On 2 CPU ranks (gloo, ``training.local_ranks``), each rank builds the preset (``small``: 0.33B
parameters, ~1.3 GB in fp32) once whole (``DualDiT(cfg)``) and once partitioned
(``training.engine.build_model`` under ZeRO-3: every parameter split across the ranks as it is
created), in fresh processes each time, model seed 0 (``torch.manual_seed(0)`` before the build;
the build itself draws nothing else). Memory is the growth of the process's resident set at
its peak while the model is built (Linux's VmHWM, reset just before the build). Printed per
rank: both peaks in MiB and their ratio; ``--repeats N`` builds each way N times.
tests/training/test_zero3_build.py asserts the ratio stays under 0.6.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def peak_while(build) -> float:
    """MiB the process's resident set grew to, at its peak, while ``build()`` ran."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark (VmHWM) to the current RSS
    before = _rss_mib("VmRSS")
    model = build()
    peak = _rss_mib("VmHWM") - before
    del model
    gc.collect()
    return peak


def build_peaks(preset: str, how: str) -> list[float]:
    """Every rank's peak (MiB) while building ``preset`` ``how``: "whole" or "zero3". Run on
    each rank of a world (``on_two_ranks``)."""
    import torch
    import torch.distributed as dist

    from model.dit import DualDiT
    from model.presets import get_preset
    from training.engine import EngineConfig, build_model, init_distributed

    init_distributed()
    cfg = get_preset(preset)
    torch.manual_seed(0)
    peak = peak_while(lambda: DualDiT(cfg) if how == "whole" else build_model(DualDiT, cfg, EngineConfig(zero_stage=3)))
    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, peak)
    return peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    from model.dit import DualDiT
    from model.presets import get_preset
    from training.local_ranks import on_two_ranks

    params = sum(p.numel() for p in DualDiT(get_preset(args.preset)).parameters()) / 1e9
    print(f"building '{args.preset}' ({params:.2f}B parameters) on 2 CPU ranks, model seed 0")
    print(f"{'repeat':>6} {'rank':>4} {'whole MiB':>10} {'ZeRO-3 MiB':>11} {'ratio':>6}")
    ratios = []
    for repeat in range(args.repeats):
        whole, zero3 = on_two_ranks(build_peaks, args.preset, "whole"), on_two_ranks(build_peaks, args.preset, "zero3")
        for rank, (w, z) in enumerate(zip(whole, zero3, strict=True)):
            ratios.append(z / w)
            print(f"{repeat:>6} {rank:>4} {w:>10.0f} {z:>11.0f} {z / w:>5.2f}x")
    print(f"ZeRO-3 build / whole build, peak per rank: {min(ratios):.2f}x-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()

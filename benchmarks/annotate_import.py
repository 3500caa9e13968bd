"""Importing a Label Studio export of 100k judgements, and ``tandem generate``'s clips per second.

    PYTHONPATH=. .venv/bin/python benchmarks/annotate_import.py [--judgements 100000] [--generate]

Import: a synthetic pairwise export (5 axes per annotation, 3 annotators per task, 5% cancelled)
is written to disk, then timed side by side: ``json.load`` of the file alone (the floor any
importer pays), ``reward.annotation.labelstudio_exports.import_exports`` (every check),
``write_rankings`` (the atomic parquet write) and the agreement report, and the whole
``tandem annotate import`` command in-process. Ratios to the bare JSON parse are printed.

``--generate``: the debug preset on CPU, 2 prompts x 4 samples at the debug sequence (1 s,
8 fps, 32x32, 30 steps): a plain loop over ``RolloutGenerator`` in this process vs the whole
``tandem generate`` command (local Ray, one actor, MLflow run), both in clips/s.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

AXES = ["visual_quality", "motion", "audio_quality", "av_sync", "prompt_alignment"]


def synthetic_export(judgements: int, path: Path) -> int:
    from reward.annotation.labelstudio_tasks import AnnotationConfig, make_tasks
    from reward.rollouts.rollout_dir import Rollout

    annotators, per_prompt = 3, 8
    tasks_needed = int(judgements / (len(AXES) * annotators) / 0.9) + 1  # room for cancelled ones
    prompts = tasks_needed // 28 + 1  # 8 clips: 28 pairs per prompt
    rollouts = [Rollout(f"ck{c}-p{p:05d}-{k:02d}", f"ck{c}-p{p:05d}", f"prompt {p}", k,
                        {"prompt_id": f"p{p:05d}", "prompt": f"prompt {p}"},
                        Path(f"/data/rollouts/ck{c}/samples/ck{c}-p{p:05d}-{k:02d}.mp4"), Path("/dev/null"))
                for p in range(prompts) for c in range(2) for k in range(per_prompt // 2)]
    tasks = make_tasks(rollouts, AnnotationConfig(media_root="/data"))[:tasks_needed]
    rng, ann_id, export, made = random.Random(0), 0, [], 0
    choices = ["A better", "B better", "Tie"]
    for i, task in enumerate(tasks):
        annotations = []
        for who in range(1, annotators + 1):
            ann_id += 1
            cancelled = rng.random() < 0.05
            result = [] if cancelled else [
                {"id": f"{ann_id}-{axis}", "from_name": axis, "to_name": "clip_a", "type": "choices",
                 "origin": "manual", "value": {"choices": [rng.choice(choices)]}} for axis in AXES]
            made += len(result)
            annotations.append({"id": ann_id, "completed_by": who, "result": result, "was_cancelled": cancelled,
                                "created_at": "2026-11-29T10:00:00Z", "project": 1, "lead_time": 3.0})
        export.append({"id": i + 1, "project": 1, "data": task["data"], "annotations": annotations})
        if made >= judgements:
            break
    path.write_text(json.dumps(export))
    return made


def bench_import(judgements: int) -> None:
    from reward.annotation.agreement import agreement_report
    from reward.annotation.labelstudio_exports import import_exports, load_export
    from reward.annotation.rankings import write_rankings

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.json"
        made = synthetic_export(judgements, path)
        print(f"export: {made} judgements, {path.stat().st_size / 1e6:.1f} MB")
        timings = {}
        t = time.perf_counter()
        export = load_export(path)
        timings["json.load (floor)"] = time.perf_counter() - t
        t = time.perf_counter()
        result = import_exports({str(path): export})
        timings["validate + to rows"] = time.perf_counter() - t
        t = time.perf_counter()
        write_rankings(result.rows, Path(tmp) / "rankings")
        timings["write rankings.parquet"] = time.perf_counter() - t
        t = time.perf_counter()
        agreement_report(result.rows)
        timings["agreement report"] = time.perf_counter() - t

        from pipelines.cli import main

        t = time.perf_counter()
        assert main(["annotate", "import", str(path), "--out", str(Path(tmp) / "cli")]) == 0
        timings["tandem annotate import (all)"] = time.perf_counter() - t
        floor = timings["json.load (floor)"]
        print(f"\n{'step':<32} {'seconds':>8} {'x json.load':>12}")
        for name, seconds in timings.items():
            print(f"{name:<32} {seconds:>8.2f} {seconds / floor:>12.1f}")
        print(f"{len(result.rows)} rows; {len(result.rows) / timings['tandem annotate import (all)']:.0f} "
              "judgements/s end to end")


def bench_generate() -> None:
    import torch

    from model.checkpoint import save
    from model.dit import DualDiT
    from model.presets import get_preset
    from pipelines.generate_cmd import GenerateConfig, run_generate
    from reward.rollouts.rollout_generator import Prompt, RolloutConfig, RolloutGenerator
    from training.checkpoint_loader import identify

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        ckpt = save(DualDiT(get_preset("debug")), tmp / "debug.safetensors")
        prompts = [Prompt("drums", "a drummer plays a fill"), Prompt("waves", "waves roll onto a beach")]
        (tmp / "prompts.txt").write_text("\n".join(p.text for p in prompts) + "\n")
        cfg = RolloutConfig(group_size=4)
        ref = identify(ckpt)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each actor gets with cpus_per_actor < 2
        t = time.perf_counter()
        gen = RolloutGenerator(str(ckpt), cfg, {"digest": ref.digest, "tag": ref.tag}, tmp / "loop")
        load = time.perf_counter() - t
        t = time.perf_counter()
        for p in prompts:
            gen.write_group(p)
        loop = time.perf_counter() - t
        torch.set_num_threads(threads)
        t = time.perf_counter()
        stats = run_generate(str(ckpt), tmp / "prompts.txt", tmp / "ray", GenerateConfig(rollout=cfg))
        whole = time.perf_counter() - t
        n = len(prompts) * cfg.group_size
        print(f"\ngenerate, debug preset on CPU, {n} clips of {gen.sequence.clip_seconds:.3f} s "
              f"{gen.sequence.width}x{gen.sequence.height} at {gen.sequence.fps:g} fps, {cfg.steps} steps, CFG on:")
        print(f"  in-process loop:          {n / loop:.2f} clips/s (after {load:.1f} s loading the models)")
        print(f"  tandem generate (Ray):    {n / whole:.2f} clips/s end to end ({whole:.1f} s incl. Ray start, "
              f"actor load, MLflow); {stats['clips_per_s']:.2f} clips/s as the command reports it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judgements", type=int, default=100_000)
    parser.add_argument("--generate", action="store_true", help="also time tandem generate (debug preset, CPU)")
    args = parser.parse_args()
    bench_import(args.judgements)
    if args.generate:
        bench_generate()


if __name__ == "__main__":
    main()

"""Saving and resuming a DeepSpeed-engine trainer (training and alignment share it).

A checkpoint is DeepSpeed's own ``<dir>/stepNNNNNNNN`` (so ``zero_to_fp32`` converts it) with
the trainer's state in its client state: the step, the EMA (each rank's own partition under
ZeRO-3) and whatever else the trainer passes (loader position, monitor baselines). With an
EMA, its whole weights are also exported as ``<tag>/ema.safetensors``, loadable with
``model.checkpoint.load``. ``<dir>/latest`` names the newest.
"""

from __future__ import annotations

from pathlib import Path


def save_checkpoint(engine, directory: str | Path, step: int, client_state: dict, ema=None,
                    model_cfg=None, rank: int = 0) -> str:
    """Save checkpoint ``stepNNNNNNNN`` (every rank calls it); returns the tag."""
    tag = f"step{step:08d}"
    engine.save_checkpoint(str(directory), tag=tag, client_state={
        **client_state, "step": step, "ema": ema.state_dict() if ema is not None else None})
    if ema is not None:
        from model.checkpoint import save_state
        from training.export import unwrapped

        full = ema.full_state_dict(engine.module)  # collective under ZeRO-3
        if rank == 0:
            save_state({unwrapped(k): v for k, v in full.items()}, model_cfg,
                       Path(directory) / tag / "ema.safetensors", "DualDiT")
    return tag


def load_latest(engine, directory: str | Path, ema=None) -> dict | None:
    """Load ``<directory>/latest`` into the engine (and the EMA); its client state, or None
    when there is no checkpoint yet."""
    if not (Path(directory) / "latest").exists():
        return None
    _, client = engine.load_checkpoint(str(directory))
    if ema is not None and client.get("ema") is not None:
        ema.load_state_dict(client["ema"])
    return client

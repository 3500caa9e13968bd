"""The reward model: a backbone and one linear score per head, behind one interface.

    model = RewardModel(RewardModelConfig(backbone="latent", heads=("motion", "overall")))
    scores = model(clips)                    # (B, H), differentiable: what the trainer uses
    model.score(clips)                       # {"motion": (B,), "overall": (B,)}: a RewardSource
    model.save("out/model", metrics=...)     # reward.json + reward.safetensors
    load_reward_model("out/model").score(clips)

Heads are named after the rankings' axes (``reward.annotation.rankings.AXES``: visual_quality,
motion, audio_quality, av_sync, prompt_alignment, overall); any subset, in any order. Each head is a
linear read-out of the backbone's feature at that head's query / reward token, so heads share the
backbone and differ only in what they attend to and weigh. Higher is better; scores are
Bradley-Terry utilities (only differences between clips mean anything; the Rao-Kupper tie parameter
``log_theta`` saved with the model says how far apart two clips must be before annotators stop
calling them a tie).

A saved model is a directory, the files ``tandem reward train`` registers in MLflow:
``reward.json`` (format, config, heads, log theta, held-out metrics, what it was trained on)
and ``reward.safetensors`` (the backbone's trainable state and the head weights). The omni
backbone's frozen base is not copied: it loads from ``omni.model_path``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from model.config import from_dict, to_dict
from reward.annotation.rankings import AXES
from reward.scoring.backbones import build_backbone
from reward.scoring.backbones.latent import LatentBackboneConfig
from reward.scoring.backbones.media_stats import MediaBackboneConfig
from reward.scoring.backbones.omni import OmniBackboneConfig
from reward.scoring.frozen_nets import copy_net
from reward.scoring.sources import Clips

FORMAT = "tandem-reward/1"
FROZEN_NETS = ("sync_net", "text_net")  # LatentBackboneConfig fields naming a pretrained net's directory
META_FILE, WEIGHTS_FILE = "reward.json", "reward.safetensors"


@dataclass
class RewardModelConfig:
    backbone: str = "latent"  # latent | media | omni
    heads: tuple = AXES
    latent: LatentBackboneConfig = field(default_factory=LatentBackboneConfig)
    media: MediaBackboneConfig = field(default_factory=MediaBackboneConfig)
    omni: OmniBackboneConfig = field(default_factory=OmniBackboneConfig)

    def __post_init__(self):
        self.heads = tuple(self.heads)
        if not self.heads or len(set(self.heads)) != len(self.heads):
            raise ValueError(f"heads must be distinct names, got {list(self.heads)}")


class RewardModel(nn.Module):
    def __init__(self, cfg: RewardModelConfig, name: str = "tandem-reward", backbone: nn.Module | None = None):
        """``backbone``: one built already (e.g. the omni thinker at real size with random
        weights, for a benchmark); by default ``cfg`` builds it."""
        super().__init__()
        self.cfg, self.name, self.heads = cfg, name, tuple(cfg.heads)
        self.backbone = backbone if backbone is not None else build_backbone(cfg, self.heads)
        d = self.backbone.feature_dim
        self.head_weight = nn.Parameter(torch.randn(len(self.heads), d) / math.sqrt(d))
        n_frozen = getattr(self.backbone, "frozen_features", 0)
        if n_frozen:  # a head starts without the frozen nets' evidence and learns how much to use it
            with torch.no_grad():
                self.head_weight[:, d - n_frozen:] = 0
        self.log_theta = 0.0  # Rao-Kupper tie strength, set by training

    @property
    def uses(self) -> str:
        return self.backbone.uses

    @property
    def device(self) -> torch.device:
        return self.head_weight.device

    def forward(self, clips: Clips) -> torch.Tensor:
        """(B, H) scores."""
        features = self.backbone(clips).float()
        return torch.einsum("bhd,hd->bh", features, self.head_weight.float())

    @torch.no_grad()
    def score(self, clips: Clips) -> dict[str, torch.Tensor]:
        """head -> (B,) scores on the CPU, higher is better (a
        ``reward.scoring.sources.RewardSource``)."""
        was_training = self.training
        self.eval()
        try:
            scores = self(clips_to(clips, self.device)).cpu()
        finally:
            self.train(was_training)
        return {head: scores[:, i] for i, head in enumerate(self.heads)}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = {f"backbone.{k}": v for k, v in self.backbone.trainable_state().items()}
        state["head_weight"] = self.head_weight.detach()
        return state

    def save(self, directory: str | Path, **meta) -> Path:
        """Write ``reward.json`` and ``reward.safetensors`` into ``directory``; ``meta`` (held-out
        metrics, data identity, ...) goes into the json."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().float().contiguous().cpu() for k, v in self.trainable_state().items()}
        save_file(state, str(directory / WEIGHTS_FILE))
        config = to_dict(self.cfg)
        for net in FROZEN_NETS:  # travel with the model
            if self.cfg.backbone == "latent" and getattr(self.cfg.latent, net):
                config["latent"][net] = copy_net(getattr(self.cfg.latent, net), directory, net)
        info = {"format": FORMAT, "name": self.name, "heads": list(self.heads), "uses": self.uses,
                "log_theta": self.log_theta, "config": config, **meta}
        (directory / META_FILE).write_text(json.dumps(info, indent=1, default=str))
        return directory


def read_meta(path: str | Path) -> dict:
    """The ``reward.json`` of a saved reward model (a directory or the json itself)."""
    path = Path(path)
    meta_path = path / META_FILE if path.is_dir() else path
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path} is not a saved reward model (no {META_FILE}); train one with "
                                "`tandem reward train` or pass models:/tandem-reward@ALIAS")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_reward_model(path: str | Path, device: str | torch.device = "cpu", **config_overrides) -> RewardModel:
    """A saved reward model (directory of reward.json + reward.safetensors), in eval mode.
    ``config_overrides`` replace top-level config sections, e.g. ``omni=...`` to point the
    omni backbone at a different local copy of its base weights."""
    from safetensors.torch import load_file

    path = Path(path)
    directory = path if path.is_dir() else path.parent
    meta = read_meta(directory)
    config = {**meta["config"], **{k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                   for k, v in config_overrides.items()}}
    for net in FROZEN_NETS:  # saved beside the model, relative to it
        if config.get("latent", {}).get(net):
            config["latent"] = {**config["latent"], net: str(directory / config["latent"][net])}
    cfg = from_dict(RewardModelConfig, config)
    model = RewardModel(cfg, name=meta.get("name", "tandem-reward"))
    state = load_file(str(directory / WEIGHTS_FILE))
    with torch.no_grad():
        model.head_weight.copy_(state.pop("head_weight"))
    model.backbone.load_trainable_state({k.removeprefix("backbone."): v for k, v in state.items()})
    model.log_theta = float(meta.get("log_theta", 0.0))
    return model.to(device).eval()


def load_reward_source(local_path_or_files: str | Path, device: str | torch.device = "cpu") -> RewardModel:
    """A trained reward model as a ``reward.scoring.sources.RewardSource`` (what alignment combines
    with metric heads). ``models:/tandem-reward@ALIAS`` is resolved by
    ``pipelines.reward_cmd.open_reward_source``, which then calls this."""
    return load_reward_model(local_path_or_files, device)


def clips_to(clips: Clips, device: torch.device) -> Clips:
    """The same clips with every tensor on ``device``."""
    moved = {f.name: getattr(clips, f.name).to(device) for f in dataclasses.fields(clips)
             if isinstance(getattr(clips, f.name), torch.Tensor)}
    return dataclasses.replace(clips, **moved)

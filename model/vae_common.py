"""Pieces both VAEs share: the diagonal Gaussian posterior and the VAE training loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class DiagonalGaussian:
    """q(z | x) = N(mean, exp(logvar)), from the encoder's 2*C output channels."""

    def __init__(self, params: torch.Tensor):
        self.mean, logvar = params.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)  # keeps exp() finite early in training

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(self.mean.shape, generator=generator).to(self.mean)
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent elements."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).sum(1)


@dataclass
class VAELoss:
    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


def vae_loss(recon: torch.Tensor, target: torch.Tensor, posterior: DiagonalGaussian,
             kl_weight: float) -> VAELoss:
    """L1 reconstruction (mean per element) + kl_weight * KL (mean per latent element).

    L1 rather than L2 keeps edges sharper; production recipes add perceptual / GAN terms
    from ``training/`` on top of this.
    """
    rec = F.l1_loss(recon.float(), target.float())
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return VAELoss(rec + kl_weight * kl, rec, kl)

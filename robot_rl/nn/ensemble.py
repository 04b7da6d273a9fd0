"""Small heads for learning on frozen features: a batched Q-ensemble, a tanh-bounded Gaussian over a vector
(the initial noise of a chunk) and a bounded residual edit whose last layer starts at zero."""

from __future__ import annotations

import math

import torch
from torch import nn


def layernorm_mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """``layers`` blocks of Linear -> LayerNorm -> ReLU, then a Linear to ``out_dim``."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matmul: (E, B, in) -> (E, B, out)."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class QEnsemble(nn.Module):
    """E Q-networks on (features, action): Linear -> LayerNorm -> ReLU blocks, then a scalar head."""

    def __init__(self, feature_dim: int, action_dim: int, ensemble: int = 10, hidden_dim: int = 256,
                 layers: int = 2) -> None:
        super().__init__()
        self.feature_dim, self.action_dim, self.ensemble = feature_dim, action_dim, ensemble
        dims = [feature_dim + action_dim] + [hidden_dim] * layers
        self.linears = nn.ModuleList(EnsembleLinear(ensemble, a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_dim) for _ in range(layers))
        self.head = EnsembleLinear(ensemble, hidden_dim, 1)

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values (E, B) of ``action`` (B, action_dim) in the states ``features`` (B, feature_dim)."""
        if features.shape[-1] != self.feature_dim or action.shape[-1] != self.action_dim:
            raise ValueError(f"Q-ensemble takes features (B, {self.feature_dim}) and actions (B, {self.action_dim}), "
                             f"got {tuple(features.shape)} and {tuple(action.shape)}")
        x = torch.cat([features, action], dim=-1).unsqueeze(0).expand(self.ensemble, -1, -1)
        for linear, norm in zip(self.linears, self.norms):
            x = torch.relu(norm(linear(x)))
        return self.head(x).squeeze(-1)


class TanhGaussianHead(nn.Module):
    """pi(w | s): a Gaussian squashed into [-bound, bound]^dim; deterministic: bound * tanh(mean)."""

    def __init__(self, feature_dim: int, dim: int, hidden_dim: int = 256, layers: int = 2, bound: float = 2.0) -> None:
        super().__init__()
        self.dim, self.bound = dim, bound
        self.net = layernorm_mlp(feature_dim, hidden_dim, 2 * dim, layers)

    def forward(self, features: torch.Tensor, deterministic: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A sample (B, dim) and its log-density (B,) (zeros when deterministic)."""
        mean, log_std = self.net(features).chunk(2, dim=-1)
        if deterministic:
            return self.bound * torch.tanh(mean), torch.zeros(features.shape[0], device=features.device)
        std = log_std.clamp(-5.0, 1.0).exp()
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * eps
        log_prob = (-0.5 * eps**2 - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (math.log(self.bound) + torch.log1p(-torch.tanh(u) ** 2 + 1e-6)).sum(-1)
        return self.bound * torch.tanh(u), log_prob


class BoundedResidual(nn.Module):
    """a = a_base + scale * tanh(f(s, a_base)) with f's last layer zero-initialised: exactly the identity until
    it is trained (no clipping: the base may act outside the range its demos spanned)."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int = 256, layers: int = 2,
                 scale: float = 0.05) -> None:
        super().__init__()
        self.scale = scale
        self.net = layernorm_mlp(feature_dim + action_dim, hidden_dim, action_dim, layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        edit = self.scale * torch.tanh(self.net(torch.cat([features, base], dim=-1)))
        return base + edit

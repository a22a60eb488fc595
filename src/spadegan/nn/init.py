"""Weight initialization as the official ``BaseNetwork.init_weights``.

Conv and linear weights: Xavier-normal with gain ``init_variance`` (0.02) by default, biases 0;
affine BatchNorm weights N(1, gain). Under spectral norm the raw weight is ``weight_orig``.
Layers of ours that must start at zero (:class:`ZeroInitLinear`) keep their zeros.
"""

from __future__ import annotations

from torch import nn


class ZeroInitLinear(nn.Linear):
    """A linear layer whose weight and bias start at zero whatever the initialization scheme: an
    added path that leaves the network's function unchanged until it is trained."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def init_weights(module: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> nn.Module:
    def init_one(m: nn.Module) -> None:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            return
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or isinstance(m, ZeroInitLinear):
            return
        weight = getattr(m, "weight_orig", None)
        if weight is None:
            weight = m.weight
        if init_type == "normal":
            nn.init.normal_(weight, 0.0, gain)
        elif init_type == "xavier":
            nn.init.xavier_normal_(weight, gain=gain)
        elif init_type == "xavier_uniform":
            nn.init.xavier_uniform_(weight, gain=1.0)
        elif init_type == "kaiming":
            nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
        elif init_type == "orthogonal":
            nn.init.orthogonal_(weight, gain=gain)
        elif init_type == "none":
            m.reset_parameters()
            return
        else:
            raise ValueError(f"init_type {init_type!r}: expected normal, xavier, xavier_uniform, kaiming, orthogonal or none")
        if m.bias is not None:
            nn.init.zeros_(m.bias)

    module.apply(init_one)
    return module

"""SecMI (Duan et al. 2023): the step-wise error of a deterministic DDIM round trip.

A deterministic DDIM step from t_c to t' costs one query at t_c (``sampling.ddim_step``):

    ε = ε̂(x, t_c);  x̂_0 = (x − √(1−ᾱ_{t_c}) ε)/√ᾱ_{t_c};  x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}) ε.

1. invert deterministically from x_0 at t = 0 through k, 2k, …, up to t_sec − k;
2. step once up to t_sec, and once back down to t_sec − k, giving x̂_{t_sec−k};
3. t-error = ‖x_{t_sec−k} − x̂_{t_sec−k}‖² (the compared state is t_sec − k, not t_sec).

Members' round trips are more consistent: smaller t-error means member; the score is its
negative. Defaults t_sec = 100, k = 10: t_sec/k + 1 = 11 queries per image.

SecMI_stat thresholds the t-error. SecMI_NN trains a classifier on the maps of abs(x − x̂). The paper
uses a ResNet-18 (SGD, lr 1e-3, 15 epochs) and picks its epoch on the test data; ours is a
small CNN sized for 8×8–32×32 images, trained on the calibration split only, with its epoch
chosen on a held-out part of the calibration split.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .. import checks
from ..metrics import auc
from ..models import DiffusionModel
from ..sampling import ddim_step


def round_trip(model: DiffusionModel, images: torch.Tensor, t_sec: int = 100, k: int = 10) -> torch.Tensor:
    """x_{t_sec−k} − x̂_{t_sec−k} for each image: the SecMI error map. t_sec/k + 1 queries per image."""
    k = checks.positive_int("k", k)
    t_sec = model.check_t(t_sec, "t_sec")
    if t_sec % k or not k <= t_sec:
        raise ValueError(f"need 0 < k <= t_sec < T with k dividing t_sec; got t_sec={t_sec}, k={k}.")
    x, t = model.clean_images(images), 0
    # 1. deterministic inversion 0 → k → 2k → … → t_sec − k  (queries at 0, k, …, t_sec − 2k)
    for t_next in range(k, t_sec - k + 1, k):
        x, _ = ddim_step(model, x, t, t_next)
        t = t_next
    # 2. one step up to t_sec (query at t_sec − k), one step back down (query at t_sec)
    x_up, _ = ddim_step(model, x, t_sec - k, t_sec)
    x_back, _ = ddim_step(model, x_up, t_sec, t_sec - k)
    # 3. the error map at t_sec − k
    return x - x_back


def score(model: DiffusionModel, images: torch.Tensor, t_sec: int = 100, k: int = 10) -> np.ndarray:
    """SecMI_stat: −‖x_{t_sec−k} − x̂_{t_sec−k}‖² (higher = member). t_sec/k + 1 queries per image."""
    return -round_trip(model, images, t_sec, k).double().flatten(1).pow(2).sum(1).cpu().numpy()


# ---------------------------------------------------------------------- SecMI_NN
class ErrorMapNet(nn.Module):
    """A small CNN on maps of abs(x − x̂): two convolutions, global pooling, one logit."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).squeeze(1)


def _standardise(maps: torch.Tensor, scale: float) -> torch.Tensor:
    return maps.abs().float() / scale


def fit_nn(member_maps: torch.Tensor, nonmember_maps: torch.Tensor, epochs: int = 40, lr: float = 1e-3,
           val_fraction: float = 0.3, batch_size: int = 64, seed: int = 0,
           monitor: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[nn.Module, dict]:
    """Train SecMI_NN on calibration error maps; choose the epoch on a held-out calibration part.

    Returns the network at the chosen epoch and a history: ``val_auc`` per epoch and
    ``chosen_epoch``; with ``monitor=(member_maps, nonmember_maps)`` (evaluation maps) also
    ``monitor_auc`` per epoch — only to show what choosing the epoch on test data would
    report, never to choose.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.cat([member_maps, nonmember_maps])
    y = torch.cat([torch.ones(len(member_maps)), torch.zeros(len(nonmember_maps))])
    perm = torch.randperm(len(x), generator=g)
    n_val = max(2, round(val_fraction * len(x)))
    val, fit = perm[:n_val], perm[n_val:]
    scale = float(x[fit].abs().mean()) or 1.0
    net = ErrorMapNet(x.shape[1])
    net.scale = scale
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    history = {"val_auc": [], "monitor_auc": []}
    best, best_state = -1.0, None
    for epoch in range(epochs):
        net.train()
        order = fit[torch.randperm(len(fit), generator=g)]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss_fn(net(_standardise(x[idx], scale)), y[idx]).backward()
            opt.step()
        s_val = nn_score(net, x[val])
        yv = y[val].numpy().astype(bool)
        val_auc = auc(s_val[yv], s_val[~yv]) if yv.any() and (~yv).any() else 0.5
        history["val_auc"].append(val_auc)
        if monitor is not None:
            history["monitor_auc"].append(auc(nn_score(net, monitor[0]), nn_score(net, monitor[1])))
        if val_auc > best:
            best, best_state = val_auc, copy.deepcopy(net.state_dict())
            history["chosen_epoch"] = epoch + 1
    net.load_state_dict(best_state)
    return net, history


@torch.no_grad()
def nn_score(net: nn.Module, maps: torch.Tensor) -> np.ndarray:
    """SecMI_NN's logit for each error map (higher = member). No model query."""
    net.eval()
    return net(_standardise(maps, net.scale)).double().numpy()

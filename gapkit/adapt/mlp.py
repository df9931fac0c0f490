"""The MLP head: a residual on top of the linear head, trained with early stopping.

torch is imported inside the functions that use it: ``import gapkit.adapt`` (the CLI, the gap
report) does not import torch, and a linear adapter never needs it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gapkit.adapt.config import FitConfig


def build_mlp(d_in: int, d_out: int, hidden: tuple[int, ...], n_inputs: int):
    """Frozen input projection (d_in -> n_inputs) -> trainable MLP -> frozen output scale."""
    import torch  # deferred: see the module docstring
    from torch import nn  # deferred: see the module docstring

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(()))

        def forward(self, x):
            return x * self.scale

    project = nn.Linear(d_in, n_inputs, bias=False)
    project.weight.requires_grad_(False)
    layers: list[nn.Module] = [project]
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.GELU()]
        width = h
    last = nn.Linear(width, d_out)
    # Zero output layer: training starts exactly at the linear head, so early stopping
    # can only keep an MLP that beats it on validation.
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers += [last, Scale()]
    return nn.Sequential(*layers).to(torch.float32)


def mlp_from_state(d_in: int, d_out: int, hidden: tuple[int, ...], n_inputs: int, state: dict[str, np.ndarray]):
    """The MLP of saved weights, in eval mode on the CPU."""
    import torch  # deferred: see the module docstring

    net = build_mlp(d_in, d_out, hidden, n_inputs)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return net.eval()


def mlp_layout(net) -> tuple[tuple[int, ...], int, dict[str, np.ndarray]]:
    """A trained MLP's hidden widths, input projection size and weights (numpy copies)."""
    import torch  # deferred: see the module docstring

    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    state = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
    return tuple(m.out_features for m in linears[1:-1]), linears[0].out_features, state


def input_projection(x: np.ndarray, max_components: int = 128, keep: float = 0.999) -> np.ndarray:
    """(d_in, n) projection of centred features onto their main principal directions, scaled
    so that the first has unit variance. Aligned shapes vary by a few percent of their size;
    O(1) inputs train far faster. The relative scale of the directions is kept: whitening
    each to unit variance would blow the noise directions up to the size of real modes."""
    _, sv, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    var = sv ** 2 / max(len(x) - 1, 1)
    n = int(np.searchsorted(np.cumsum(var) / var.sum(), keep) + 1)
    n = max(1, min(n, max_components, int((var > 1e-12 * var[0]).sum())))
    return (vt[:n].T / np.sqrt(var[0])).astype(np.float32)


def run_mlp(net, x: np.ndarray, device: str, chunk: int = 65536) -> np.ndarray:
    """The MLP's residual (N, 2K_t) on centred features (N, d_in), in chunks."""
    import torch  # deferred: see the module docstring

    out = np.empty((len(x), net[-2].out_features))
    with torch.inference_mode():
        for i in range(0, len(x), chunk):
            xb = torch.from_numpy(x[i:i + chunk].astype(np.float32)).to(device)
            out[i:i + chunk] = net(xb).float().cpu().numpy()
    return out


def train_mlp(x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
              linear: Callable[[np.ndarray], np.ndarray], cfg: FitConfig,
              progress: Callable[[int, int], None] | None, device: str):
    """Residual MLP on top of ``linear``; AdamW, early stopping on the validation pairs. Returns
    (net at its best validation epoch, epochs run)."""
    import torch  # deferred: see the module docstring

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    resid = y - linear(x)
    mask = ~np.isnan(resid)
    resid = np.nan_to_num(resid)
    t = {k: torch.from_numpy(v.astype(np.float32)).to(device) for k, v in
         (("x", x), ("r", resid), ("m", mask.astype(np.float32)))}
    tr = torch.from_numpy(train_idx).to(device)
    va = torch.from_numpy(val_idx).to(device)
    net = _initial_net(x, y, resid, train_idx, cfg).to(device)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)

    def loss_on(idx):
        pred = net(t["x"][idx])
        err = (pred - t["r"][idx]) * t["m"][idx]
        # Point distance in the aligned frame, the quantity NME measures.
        d = torch.sqrt((err.view(len(idx), -1, 2) ** 2).sum(-1) + 1e-12)
        return d.mean()

    best = (np.inf, None, 0)
    if len(va):
        with torch.no_grad():
            best = (float(loss_on(va)), {k: v.clone() for k, v in net.state_dict().items()}, 0)
    # At least ~16 steps an epoch, so that patience (in epochs) means something on small data.
    bs = max(1, min(cfg.batch_size, max(32, len(tr) // 16), len(tr)))
    steps_per_epoch = max(1, len(tr) // bs)
    epochs = max(1, min(cfg.epochs, -(-cfg.max_steps // steps_per_epoch)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    epoch = 0
    for epoch in range(1, epochs + 1):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=gen).to(device)]
        for i in range(0, steps_per_epoch * bs, bs):
            opt.zero_grad(set_to_none=True)
            loss_on(perm[i:i + bs]).backward()
            opt.step()
            sched.step()
        if progress:
            progress(epoch, epochs)
        if len(va):
            best = _keep_best(net, loss_on, va, best, epoch)
            if best[2] != epoch and epoch - best[2] >= cfg.patience:
                break
    if best[1] is not None:
        net.load_state_dict(best[1])
    return net.eval(), epoch


def _initial_net(x: np.ndarray, y: np.ndarray, resid: np.ndarray, train_idx: np.ndarray, cfg: FitConfig):
    """The untrained MLP: its input projection fitted on the training features and its output
    scale the residuals' RMS, so that it learns on O(1) numbers."""
    import torch  # deferred: see the module docstring

    proj = input_projection(x[train_idx])
    net = build_mlp(x.shape[1], y.shape[1], cfg.hidden, proj.shape[1])
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(proj.T))
        net[-1].scale.fill_(float(np.sqrt((resid[train_idx] ** 2).mean())) or 1.0)
    return net


def _keep_best(net, loss_on: Callable, va, best: tuple, epoch: int) -> tuple:
    """(validation loss, weights, epoch) of the better of ``best`` and the net now."""
    import torch  # deferred: see the module docstring

    net.eval()
    with torch.no_grad():
        v = float(loss_on(va))
    if v < best[0] - 1e-7:
        return (v, {k: w.clone() for k, w in net.state_dict().items()}, epoch)
    return best


"""K copies of one CNN host trained side by side as one wide network (the batched value
forks). Private to ``esper_ab.episodes``.

Every copy's parameter is one slice of a stacked tensor with a leading fork axis, and the
forward is the host's, made wide: the first convolution reads the shared input once with
K x C_out output channels, later convolutions are grouped (``groups=K``), BatchNorm runs
over the K x C channels (its statistics are per channel, hence per fork), and the head is
a batched matrix product. Channels are fork-major (fork ``k`` owns channels
``k*C .. (k+1)*C - 1`` of every activation), so a slot hook sees fork ``k``'s activation
as one channel slice. The loss is the sum of the forks' mean losses, so each fork's
gradient is exactly its own. Per-fork gradient clipping reproduces
``clip_grad_norm_`` on each fork; AdamW (``foreach=False``) is elementwise, so on the
stacked tensors it is each fork's update.

The copies differ from K separate hosts only in the order of floating-point sums inside
the convolutions, the head and the norms (the forward and the gradients agree to float32
rounding; ``tests/episodes/test_batched_forks.py`` pins the tolerance).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from esper_ab.episodes._training import Evaluation, HeldOut
from esper_ab.episodes.hosts import CNNHost
from esper_ab.episodes.workloads import IGNORE_INDEX, task_loss


def supports(host: nn.Module) -> bool:
    """True when ``host`` can be stacked (the CNN host and its exact layout)."""
    return type(host) is CNNHost


class StackedCNN(nn.Module):
    """``k`` copies of ``host`` (its current parameters, buffers and train/eval mode)."""

    def __init__(self, host: CNNHost, k: int) -> None:
        super().__init__()
        if not supports(host):
            raise TypeError(f"cannot stack {type(host).__name__}")
        self.k = k
        self.config = host.config
        self._pools = list(host._pools)
        self._names = [name for name, _ in host.named_parameters()]
        self._stacked = nn.ParameterList(
            nn.Parameter(p.detach().unsqueeze(0).repeat(k, *([1] * p.dim())).contiguous())
            for _, p in host.named_parameters())
        self._by_name = dict(zip(self._names, self._stacked, strict=True))
        self._momentum = [float(n.momentum) for n in host.norms]  # type: ignore[arg-type]
        self._eps = [float(n.eps) for n in host.norms]
        for i, norm in enumerate(host.norms):
            self.register_buffer(f"rm{i}", norm.running_mean.detach().repeat(k).clone())
            self.register_buffer(f"rv{i}", norm.running_var.detach().repeat(k).clone())
        self.train(host.training)

    def host_parameters(self) -> list[nn.Parameter]:
        """The stacked parameters, in ``host.parameters()`` order."""
        return list(self._stacked)

    def forward(self, x: Tensor, slot_hook=None) -> Tensor:
        """Logits of shape (B, K, n_classes) for an input shared by every fork."""
        p, k = self._by_name, self.k
        # channels-last: CPU max-pooling and convolutions are several times faster on it
        h = x.contiguous(memory_format=torch.channels_last)
        for i in range(self.config.n_blocks):
            w = p[f"convs.{i}.weight"]
            w = w.reshape(k * w.shape[1], *w.shape[2:])
            h = F.conv2d(h, w, padding=1, groups=1 if i == 0 else k).contiguous(
                memory_format=torch.channels_last)
            h = F.batch_norm(h, getattr(self, f"rm{i}"), getattr(self, f"rv{i}"),
                             p[f"norms.{i}.weight"].reshape(-1),
                             p[f"norms.{i}.bias"].reshape(-1), self.training,
                             self._momentum[i], self._eps[i])
            h = F.relu(h)
            if slot_hook is not None:
                h = slot_hook(f"block{i + 1}.pre_pool", h)
            if self._pools[i]:
                h = F.max_pool2d(h, 2)
                if slot_hook is not None:
                    h = slot_hook(f"block{i + 1}.post_pool", h)
        feat = h.mean(dim=(2, 3)).view(h.shape[0], k, -1).transpose(0, 1)   # (K, B, C)
        w, b = p["head.weight"], p["head.bias"]
        logits = torch.baddbmm(b.unsqueeze(1), feat, w.transpose(1, 2))      # (K, B, n)
        return logits.transpose(0, 1)


def stacked_loss(logits: Tensor, y: Tensor, loss=None) -> Tensor:
    """The sum over forks of each fork's mean loss: ``loss`` (a workload's own, taking one
    fork's (B, n) logits) per fork, or cross-entropy (``task_loss``) when it is None or
    ``task_loss``."""
    if loss is not None and loss is not task_loss:
        return sum(loss(logits[:, j], y) for j in range(logits.shape[1]))
    b, k, n = logits.shape
    losses = F.cross_entropy(logits.reshape(b * k, n), y.repeat_interleave(k),
                             ignore_index=IGNORE_INDEX, reduction="none").view(b, k)
    scored = (y != IGNORE_INDEX).sum().clamp_min(1)
    return (losses.sum(0) / scored).sum()


def stacked_optimizer_state(state: Mapping, k: int) -> dict:
    """A host AdamW state dict with every per-parameter tensor stacked ``k`` times (the
    step counters stay scalars: every fork starts at the same step)."""
    out = copy.deepcopy(dict(state))
    for entry in out["state"].values():
        for name, value in list(entry.items()):
            if isinstance(value, Tensor) and name != "step" and value.dim() > 0:
                entry[name] = value.unsqueeze(0).repeat(k, *([1] * value.dim())).contiguous()
    return out


@torch.no_grad()
def clip_per_fork_(params: Sequence[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_(fork_params, max_norm)`` for each fork's slice of ``params``."""
    if max_norm <= 0:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    k = grads[0].shape[0]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(k, -1), 2, dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(k, *([1] * (g.dim() - 1))))


class GroupClipper:
    """``clip_grad_norm_(group, max_norm)`` for every group of parameters, in a few fused
    operations, without reading a value on the host and (once its index is on the device)
    without a host-to-device copy per call."""

    def __init__(self, groups: Sequence[Sequence[Tensor]], max_norm: float) -> None:
        self.groups = [list(g) for g in groups]
        self.max_norm = max_norm
        self._index: tuple[tuple, Tensor] | None = None

    @torch.no_grad()
    def __call__(self) -> None:
        if self.max_norm <= 0:
            return
        grads, owner = [], []
        for g, params in enumerate(self.groups):
            for p in params:
                if p.grad is not None:
                    grads.append(p.grad)
                    owner.append(g)
        if not grads:
            return
        key = tuple(owner)
        if self._index is None or self._index[0] != key:
            self._index = (key, torch.tensor(owner, device=grads[0].device))
        sq = torch.stack(torch._foreach_norm(grads)).square()
        total = torch.zeros(len(self.groups), dtype=sq.dtype, device=sq.device).index_add_(
            0, self._index[1], sq)
        coef = torch.clamp(self.max_norm / (total.sqrt() + 1e-6), max=1.0)
        start = 0
        for g in range(len(self.groups)):
            end = start
            while end < len(owner) and owner[end] == g:
                end += 1
            if end > start:
                torch._foreach_mul_(grads[start:end], coef[g])
            start = end


def clip_groups_(groups: Sequence[Sequence[Tensor]], max_norm: float) -> None:
    """``clip_grad_norm_(group, max_norm)`` for every group (see ``GroupClipper``)."""
    GroupClipper(groups, max_norm)()


def merged_adamw(optimizers: Sequence[torch.optim.AdamW], *, lr: float,
                 weight_decay: float) -> torch.optim.AdamW | None:
    """One AdamW (``foreach=False``: the same elementwise update, bit for bit) over the
    parameters of ``optimizers``, sharing each parameter's state with its original
    optimizer; None when there is none."""
    params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
    if not params:
        return None
    merged = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    for opt in optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                # the same dict: the merged steps update it in place, so each original
                # optimizer's state_dict() stays current
                merged.state[p] = opt.state[p]
    return merged


class StackedBlendHook:
    """``BlendHook`` for every fork: at each slot, fork ``k``'s channel slice becomes
    ``h + alpha (s_k(h) - h)`` when fork ``k`` has its seed there; one ``alpha`` for all."""

    def __init__(self, seeds: Mapping[str, Sequence[tuple[int, nn.Module]]],
                 widths: Mapping[str, int]) -> None:
        self.seeds, self.widths, self.alpha = seeds, widths, 0.0

    def __call__(self, slot: str, h: Tensor) -> Tensor:
        placed = self.seeds.get(slot)
        if not placed or self.alpha == 0.0:
            return h
        parts = list(h.split(self.widths[slot], dim=1))
        for k, seed in placed:
            part = parts[k]
            parts[k] = part + self.alpha * (seed(part) - part)
        return torch.cat(parts, dim=1).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate_stacked(model: StackedCNN, workload, *, hook=None,
                     batch_size: int = 1024) -> list[Evaluation]:
    """``evaluate`` for every fork of ``model`` (eval mode) on the held-out split, by the
    workload's own loss and accuracy. Rows are chunked on the CPU so one chunk holds about
    1024 rows of one host's activations (it then stays in the caches); the chunking changes
    nothing but float summation order."""
    was_training = model.training
    model.eval()
    k = model.k
    plugin = workload.plugin
    # the defaults, vectorized over the forks (exactly what the batched forks always ran)
    fused = plugin.default_loss and plugin.default_accuracy
    held_out = [] if fused else [HeldOut(workload, workload.test_x.device) for _ in range(k)]
    loss_sum = torch.zeros(k, dtype=torch.float64, device=workload.test_x.device)
    flags = []
    n = workload.test_x.shape[0]
    # on the CPU a chunk stays in the caches; a GPU takes the whole batch
    step = batch_size if workload.test_x.is_cuda else max(1, min(batch_size, 1024 // k))
    for start in range(0, n, step):
        x = workload.test_x[start:start + step]
        y = workload.test_y[start:start + step]
        logits = model(x, hook)                                         # (B, K, n)
        if not fused:
            for j in range(k):
                held_out[j].add(logits[:, j], y)
            continue
        b, _, c = logits.shape
        losses = F.cross_entropy(logits.reshape(b * k, c), y.repeat_interleave(k),
                                 reduction="none").view(b, k)
        loss_sum += losses.sum(0).double()
        flags.append(logits.argmax(dim=-1) == y[:, None])
    model.train(was_training)
    if not fused:
        return [h.result() for h in held_out]
    # SYNC POINT: one copy per evaluation of all the forks.
    correct = torch.cat(flags).cpu().numpy()
    loss = loss_sum.cpu().tolist()
    total = max(correct.shape[0], 1)
    return [Evaluation(loss[j] / total, float(correct[:, j].mean()) if correct.shape[0]
                       else 0.0, correct[:, j].copy()) for j in range(k)]

"""DLRM's fast training path, the one `recstack train --model dlrm` and `DLRM.fit` take when it
applies: the fused table, the Triton kernels and a CUDA graph.

    plain path                               fast path
    codes -> FusedEmbedding (sparse grad)    codes -> sort (one batch ahead, side stream)
    -> bottom / interaction / top            -> bottom -> GatherInteraction (lookup + dots,
    -> backward -> RowWiseAdagrad (table)       one Triton kernel) -> top
       + Adam (MLPs)                         -> backward (rows' gradient to the table)
                                             -> Adam (MLPs); forward..Adam captured as ONE
                                                CUDA graph, replayed per batch
                                             -> duplicate merge + row-wise Adagrad (Triton)

Both paths train the same weights with the same optimisers: the fast path's table is a
`RowWiseAdagradTable.over` the model's own `FusedEmbedding` weight and the plain path's
`RowWiseAdagrad` accumulator (shared storage), so the fitted model, its checkpoints and its
saved files are the plain ones, and `tests/models/ctr/test_fast_path.py` checks that the two
paths make the same updates.

Why a graph: at batch 65,536 the GPU finishes a step in ~2-3 ms, but launching its ~100
kernels from Python takes longer, so the GPU would wait on the host. Graphs need static shapes
and addresses: each batch's inputs are copied into fixed buffers and the rows' gradient lands in
a fixed buffer. The table's merge and update depend on the batch's distinct-row count, so they
run eagerly after each replay (three launches). The first steps run eagerly (cuBLAS handles, the
optimiser state, compilation), and so does any batch of another size (an epoch's last one).

`plan` says whether the path applies and, when it does not, why; the estimator prints it and
the JSON line of a run carries it (``fast_path``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from recstack.models.ctr.dlrm_kernels import HAVE_TRITON, GatherInteraction
from recstack.models.ctr.fused_table import RowWiseAdagradTable
from recstack.models.ctr.optim import MultiOptimizer, RowWiseAdagrad
from recstack.training.trainer import TrainConfig

MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class FastPathPlan:
    """Whether training takes the fast path, with which parts, and why not when it does not."""

    used: bool
    graph: bool = False  # CUDA graph around forward, backward and the MLPs' optimiser step
    kernels: str = "pytorch"  # "triton" (CUDA + Triton, pow2 dim >= 16) or "pytorch"
    reason: str = ""  # why the path (or the graph, or the kernels) is not used

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the console."""
        if not self.used:
            return f"fast path off: {self.reason}"
        parts = ["fused table", f"{self.kernels} kernels", "CUDA graph" if self.graph else "no CUDA graph"]
        return "fast path: " + ", ".join(parts) + (f" ({self.reason})" if self.reason else "")


def plan(net: Any, cfg: Any, train: TrainConfig, device: torch.device, *, mode: str = "auto",
         weighted: bool = False, distributed: bool = False) -> FastPathPlan:
    """Decide the training path of a DLRM network `net` with config `cfg` (a `DLRMConfig`).

    `mode`: ``auto`` takes the path on CUDA when it applies; ``always`` takes it wherever it applies
    (on the CPU: the fused ops eagerly, no graph; for tests and debugging); ``never`` never.
    """
    if mode not in MODES:
        raise ValueError(f"fast_path must be one of {', '.join(MODES)}, got {mode!r}")
    layout = net.layout
    why = None
    if mode == "never":
        why = "fast_path=never"
    elif not cfg.sparse:
        why = "sparse=false: the tables train with the dense optimiser, the fused table needs row-wise Adagrad (sparse=true)"
    elif net.bottom is None or layout.bags or layout.emb_dim or layout.cross_sizes or not layout.cat_sizes:
        why = "the fused interaction needs numeric features and categorical fields only (no bags, crosses or vectors)"
    elif weighted:
        why = "example weights (weight_column) need the plain loss"
    elif distributed:
        why = "torch.distributed runs train with DDP's step"
    elif train.grad_clip > 0:
        why = "grad_clip needs every gradient before the step"
    elif train.optimizer.lower() not in ("adam", "adamw"):
        why = f"optimizer={train.optimizer}: the fast path's MLP step is Adam or AdamW"
    elif device.type != "cuda" and mode == "auto":
        why = "on the CPU the plain path is as fast (no Triton kernels, no CUDA graph); fast_path=always forces it"
    if why is not None:
        return FastPathPlan(False, reason=why)
    notes = []
    triton = HAVE_TRITON and device.type == "cuda"
    dim_ok = cfg.dim >= 16 and cfg.dim & (cfg.dim - 1) == 0
    if device.type == "cuda" and not HAVE_TRITON:
        notes.append("Triton is not installed: PyTorch versions of the kernels")
    elif triton and not dim_ok:
        notes.append(f"dim={cfg.dim}: the Triton kernels need a power of two >= 16")
    if triton and not train.amp:
        notes.append("amp=false: the Triton kernels need bf16 activations")
    graph = device.type == "cuda"
    if graph and train.plateau_factor < 1.0:
        graph = False
        notes.append("no CUDA graph: a learning-rate schedule changes Adam's lr, which a captured step would not see")
    return FastPathPlan(True, graph=graph, kernels="triton" if triton and dim_ok and train.amp else "pytorch",
                        reason="; ".join(notes))


class FusedDLRMStep:
    """One training step of the fast path (a `recstack.training.trainer.TrainStep`).

    Args:
        net: the `DLRMNet`, on its device; its ``embed.table`` (a `FusedEmbedding`) is trained
            in place through a `RowWiseAdagradTable` view.
        train: the optimisation settings (lr, weight_decay, optimizer, amp).
        embedding_lr: the table's row-wise Adagrad step size.
        graph: capture forward, backward and Adam as one CUDA graph (CUDA only).
        augment: ``augment(batch, generator) -> batch`` applied to each batch before its sort
            (the estimator's id dropout), or None.
        warmup: eager steps before the capture.
    """

    def __init__(self, net: Any, train: TrainConfig, embedding_lr: float, graph: bool = False,
                 augment: Any = None, warmup: int = 3) -> None:
        fused = net.embed.table
        self.net, self.fused, self.augment, self.warmup = net, fused, augment, max(1, warmup)
        self.device = fused.weight.device
        self.amp = train.amp and self.device.type == "cuda"
        self.use_graph = graph and self.device.type == "cuda"
        dense = [p for p in net.parameters() if p.requires_grad and p is not fused.weight]
        # the plain path's optimiser layout (`CTRModule.make_optimizer`): checkpoints are shared
        self.table_opt = RowWiseAdagrad([fused.weight], lr=embedding_lr)
        self.table_opt.state[fused.weight]["sum"] = torch.zeros(fused.weight.shape[0], device=self.device)
        kind = torch.optim.AdamW if train.optimizer.lower() == "adamw" else torch.optim.Adam
        kw: dict[str, Any] = dict(lr=train.lr, weight_decay=train.weight_decay)
        if self.device.type == "cuda":
            kw.update(fused=True, capturable=self.use_graph)
        self.dense_opt = kind(dense, **kw)
        self.optimizer = MultiOptimizer([self.table_opt, self.dense_opt])
        self.table = RowWiseAdagradTable.over(fused.weight.data, self._accumulator(), fused.sizes, lr=embedding_lr)
        self.steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None

    def _accumulator(self) -> Tensor:
        # looked up each step: loading a checkpoint into the optimiser replaces the state tensor
        return self.table_opt.state[self.fused.weight]["sum"]

    # ---- the trainer's side --------------------------------------------------------------------
    def prepare(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Any]:
        """Runs one batch ahead (on a side stream on CUDA): augmentation and the rows' sort,
        which reads no weights."""
        if self.augment is not None:
            batch = self.augment(batch, generator)
        return {"num": batch["num"], "label": batch["label"].float(), "sorted": self.table.sort(batch["cat"])}

    def __call__(self, batch: dict[str, Any]) -> Tensor:
        """Train on one prepared batch; returns its loss (a device scalar)."""
        self.table.accumulator = self._accumulator()
        self.table.lr = self.table_opt.param_groups[0]["lr"]
        self.steps += 1
        rows = batch["sorted"].rows
        if not self.use_graph:
            return self._eager(batch)
        if self.steps <= self.warmup:  # warm-up off the capture stream, as capture requires
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                loss = self._eager(batch)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return loss
        if self.graph is None:
            self._capture(batch)
        if rows.shape != self.rows.shape:  # another batch size (an epoch's last batch)
            return self._eager(batch)
        self.num.copy_(batch["num"])
        self.label.copy_(batch["label"])
        self.rows.copy_(rows)
        self.graph.replay()
        self.table.apply_rows_grad(batch["sorted"], self.rows_grad)
        return self.loss

    # ---- the step ------------------------------------------------------------------------------
    def _forward_backward(self, num: Tensor, label: Tensor, rows: Tensor, sink) -> Tensor:
        net = self.net
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            x = net.bottom(num)
            t = GatherInteraction.apply(x, self.table.weight, rows, sink)
            logits = net.top(t).squeeze(1)
        loss = net.loss(logits, {"label": label})
        loss.backward()
        self.dense_opt.step()
        return loss.detach()

    def _eager(self, batch: dict[str, Any]) -> Tensor:
        sorted_rows = batch["sorted"]
        grads: list[Tensor] = []
        self.dense_opt.zero_grad(set_to_none=True)
        loss = self._forward_backward(batch["num"], batch["label"], sorted_rows.rows, grads.append)
        self.table.apply_rows_grad(sorted_rows, grads.pop())
        return loss

    def _capture(self, batch: dict[str, Any]) -> None:
        self.num, self.label = batch["num"].clone(), batch["label"].clone()
        self.rows = batch["sorted"].rows.clone()
        grads: list[Tensor] = []
        self.graph = torch.cuda.CUDAGraph()
        self.dense_opt.zero_grad(set_to_none=True)  # gradients then live in the graph's memory pool
        with torch.cuda.graph(self.graph):
            self.loss = self._forward_backward(self.num, self.label, self.rows, grads.append)
        (self.rows_grad,) = grads  # the backward's [B*F, D] rows gradient, refilled per replay

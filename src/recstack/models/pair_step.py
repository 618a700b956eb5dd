"""The (user, positive, negatives) training step of MF and LightGCN as one CUDA graph (a
`recstack.training.trainer.TrainStep`).

An MF step is tiny: three gathers from the tables, a loss, their backward and an Adam update
of two tables (LightGCN adds its propagation over the graph). In eager PyTorch the GPU waits on
Python for most of it, and the negative sampler reads back to the host how many draws hit a
positive, once per batch. This step removes both:

* negatives are drawn inside the step with a fixed amount of work
  (`recstack.training.samplers.UniformSampler.sample_fixed`: draw, redraw the entries that hit
  a positive a fixed number of times, mask what is left out of the loss), from the CUDA
  generator, so nothing leaves the device;
* forward, backward and the Adam update (``capturable=True``) are captured once as a CUDA graph
  and replayed for every batch; an epoch's short last batch is padded with rows of weight 0,
  which change neither the loss (a weighted mean) nor the gradients;
* a learning-rate change (the plateau schedule) captures the step again with the new rate.

`plan` says whether the step applies (CUDA, Adam/AdamW, no gradient clipping, per-example
negatives, one process) and why not; where the capture itself fails, training falls back to
the plain step and says so.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recstack.distributed.env import is_distributed
from recstack.training.trainer import TrainConfig, build_optimizer

if TYPE_CHECKING:
    from recstack.models.mf import MF

log = logging.getLogger(__name__)


@dataclass
class StepPlan:
    """Which training step an MF-family model uses, and why."""

    used: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(model: MF, device: torch.device) -> StepPlan:
    """Whether `model` trains with `GraphedPairStep` under its ``cuda_graph`` setting.

    Raises:
        ValueError: ``cuda_graph="always"`` and the step does not apply (one line, the reason).
    """
    train = model.train_config
    if train.cuda_graph == "never":
        return StepPlan(False, "cuda_graph=never")
    why = []
    if device.type != "cuda":
        why.append(f"device {device} is not CUDA")
    if model.shared_negatives:
        why.append("shared_negatives (the graphed step draws negatives per example)")
    if train.optimizer.lower() not in ("adam", "adamw"):
        why.append(f"optimizer={train.optimizer} (Adam or AdamW only)")
    if train.grad_clip > 0:
        why.append("grad_clip > 0")
    if is_distributed():
        why.append("torch.distributed (DDP runs the plain step)")
    if why:
        if train.cuda_graph == "always":
            raise ValueError(f"{model.name}: cuda_graph=always, but the graphed step does not apply: "
                             + "; ".join(why))
        return StepPlan(False, "; ".join(why))
    return StepPlan(True)


class GraphedPairStep:
    """Forward (negatives drawn inside), backward and Adam as one replayed CUDA graph.

    Args:
        model: the MF-family model being fitted (its ``module_`` and ``sampler_`` on a CUDA device).
        train: the optimisation settings.
        warmup: eager steps (on a side stream, as capture requires) before the capture.
    """

    def __init__(self, model: MF, train: TrainConfig, warmup: int = 3) -> None:
        self.model, self.module = model, model.module_
        self.device = next(self.module.parameters()).device
        self.batch_size, self.warmup, self.amp = train.batch_size, max(1, warmup), train.amp
        self.optimizer = build_optimizer(self.module, train, fused=True, capturable=True)
        self.steps, self.captures = 0, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_lr: tuple[float, ...] | None = None
        self.failed: str | None = None  # why the capture failed: the plain step runs instead

    def prepare(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """The batch padded to the full batch size, with a weight per row (0 = padding)."""
        u, i = batch["user"], batch["item"]
        n = len(u)
        w = torch.ones(self.batch_size, device=u.device)
        short = self.batch_size - n
        if short > 0:
            u = torch.cat([u, u.new_zeros(short)])
            i = torch.cat([i, i.new_zeros(short)])
            w[n:] = 0.0
        return {"user": u, "item": i, "weight": w}

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        """Train on one prepared batch; returns its loss (a device scalar)."""
        self.steps += 1
        self.model._invalidate_tables()
        if self.failed is not None or self.steps <= self.warmup:
            return self._eager(batch)
        lr = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        if self.graph is None or lr != self.graph_lr:
            try:
                self._capture(batch)
            except RuntimeError as e:  # e.g. a kernel that cannot be captured: train on, say why
                self.failed, self.graph = str(e).splitlines()[0][:200], None
                log.warning("%s: CUDA graph capture failed (%s); training with the plain step",
                            self.model.name, self.failed)
                torch.cuda.synchronize(self.device)
                return self._eager(batch)
            self.graph_lr = lr
            self.captures += 1
        for k, v in batch.items():
            self.static[k].copy_(v)
        self.graph.replay()
        return self.loss

    def _eager(self, batch: dict[str, Tensor]) -> Tensor:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._step(batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return loss

    def _step(self, batch: dict[str, Tensor]) -> Tensor:
        # autocast's weight-cast cache must be off inside a captured region
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            loss = self.model._graph_loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _capture(self, batch: dict[str, Tensor]) -> None:
        self.static = {k: v.clone() for k, v in batch.items()}
        self.graph = None  # a re-capture frees the old graph's memory first
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # gradients then live in the graph's pool
        with torch.cuda.graph(graph):
            self.loss = self._step(self.static)
        self.graph = graph

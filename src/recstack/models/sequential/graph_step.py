"""The sequence models' training step as one CUDA graph (a `recstack.training.trainer.TrainStep`).

A sequence model's step is small (two attention blocks over ``[batch, 50]``) and launches a few
hundred kernels; in eager PyTorch the GPU waits on Python for most of it, and the plain loss
reads the number of target positions back to the host (``hidden[targets > 0]``) once per batch.
This step removes both:

* the loss is computed at a fixed number of positions (`cap`), those with a target first, the
  rest ignored in the mean: the same value as the plain step's, with no data-dependent shape
  and so no host sync in the step. ``prepare`` (one batch ahead, on a side stream) counts the
  batch's targets; a batch with more than `cap` targets makes the step capture again with a
  larger cap, so no target is ever dropped. Most positions of a window are padding on sparse
  data (Beauty: 9 items on average in 50 positions), and the scores over the catalogue are the
  step's largest cost, so the cap saves most of it;
* forward, backward and the Adam update (``capturable=True``) are captured once as a CUDA graph
  and replayed for every batch; an epoch's short last batch is padded with all-padding rows,
  which have no targets and change nothing;
* the random parts that use the trainer's generator (BERT4Rec's masks) are drawn in ``prepare``,
  one batch ahead, outside the graph; dropout draws from the CUDA generator inside it.

`plan` says whether the step applies (CUDA, the full cross-entropy loss, Adam/AdamW, a constant
learning rate, no gradient clipping, one process, logits that fit in memory) and why not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recstack.distributed.env import is_distributed
from recstack.training.trainer import TrainConfig, build_optimizer

if TYPE_CHECKING:
    from recstack.models.sequential.base import SequentialRecommender

# the all-position logits (bf16), their float32 copy and its gradient must fit in this share of
# the free device memory
_LOGITS_MEMORY_SHARE = 0.25


@dataclass
class GraphPlan:
    """Which training step a sequence model uses, and why (the run's JSON carries it)."""

    used: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return "training step: one CUDA graph" if self.used else f"training step: plain ({self.reason})"


def step_obstacles(train: TrainConfig, device: torch.device) -> list[str]:
    """Why no captured step (of any model) can train under `train` on `device`: the reasons
    every graphed step shares (a model's `plan` adds its own)."""
    why = []
    if device.type != "cuda":
        why.append(f"device {device} is not CUDA")
    if train.optimizer.lower() not in ("adam", "adamw"):
        why.append(f"optimizer={train.optimizer} (Adam or AdamW only)")
    if train.grad_clip > 0:
        why.append("grad_clip > 0")
    if is_distributed():
        why.append("torch.distributed (DDP runs the plain step)")
    return why


def decide(name: str, mode: str, why: list[str]) -> GraphPlan:
    """The plan for the reasons `why` (none: the graph is used) under ``cuda_graph=mode``.

    Raises:
        ValueError: ``cuda_graph="always"`` and there is a reason (one line).
    """
    if not why:
        return GraphPlan(True)
    if mode == "always":
        raise ValueError(f"{name}: cuda_graph=always, but the graphed step does not apply: " + "; ".join(why))
    return GraphPlan(False, "; ".join(why))


def plan(model: SequentialRecommender, n_items: int, width: int, device: torch.device) -> GraphPlan:
    """Whether `model` trains with `GraphedSequenceStep` under its ``cuda_graph`` setting.

    Raises:
        ValueError: ``cuda_graph="always"`` and the step does not apply (one line, the reason).
    """
    train = model.train_config
    if train.cuda_graph == "never":
        return GraphPlan(False, "cuda_graph=never")
    why = step_obstacles(train, device)
    if model.loss != "ce":
        why.append(f"loss={model.loss} (the graphed step computes the full cross-entropy)")
    if train.plateau_factor < 1.0:
        why.append("a learning-rate schedule changes the lr, which a captured step would not see")
    if not why:
        need = train.batch_size * width * n_items * (2 + 4 + 4)
        free, _ = torch.cuda.mem_get_info(device)
        if need > _LOGITS_MEMORY_SHARE * free:
            why.append(f"the all-position logits need {need / 2**30:.1f} GiB, more than "
                       f"{_LOGITS_MEMORY_SHARE:.0%} of the {free / 2**30:.1f} GiB free")
    return decide(model.name, train.cuda_graph, why)


class GraphedSequenceStep:
    """Forward, backward and Adam as one replayed CUDA graph (see the module docstring).

    Args:
        model: the fitted-in-progress sequence model (its ``module_`` on a CUDA device).
        train: the optimisation settings.
        warmup: eager steps (on a side stream, as capture requires) before the capture.
    """

    def __init__(self, model: SequentialRecommender, train: TrainConfig, warmup: int = 3) -> None:
        self.model, self.module = model, model.module_
        self.device = next(self.module.parameters()).device
        self.batch_size, self.warmup = train.batch_size, max(1, warmup)
        self.amp = train.amp
        self.optimizer = build_optimizer(self.module, train, fused=True, capturable=True)
        self.steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.most_targets, self.cap, self.captures = 0, 0, 0

    def prepare(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Any]:
        """Inputs and targets of one batch (masks drawn here), padded to the full batch size, and
        its number of targets (read on the side stream: the running step is not waited for)."""
        inputs, targets = self.model._inputs_targets(batch, generator)
        n_targets = int((targets > 0).sum())
        user = batch["user"]
        short = self.batch_size - len(inputs)
        if short > 0:  # all-padding rows: no targets, so no effect on the loss or the gradients
            inputs = torch.cat([inputs, inputs.new_zeros(short, inputs.shape[1])])
            targets = torch.cat([targets, targets.new_zeros(short, targets.shape[1])])
            user = torch.cat([user, user.new_zeros(short)])
        return {"inputs": inputs, "targets": targets, "user": user, "n_targets": n_targets}

    def __call__(self, batch: dict[str, Tensor]) -> Tensor:
        """Train on one prepared batch; returns its loss (a device scalar)."""
        self.steps += 1
        self.most_targets = max(self.most_targets, batch["n_targets"])
        if self.steps <= self.warmup:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                loss = self._step(batch["inputs"], batch["targets"], batch["user"], None)
            torch.cuda.current_stream(self.device).wait_stream(side)
            return loss
        if self.graph is None or batch["n_targets"] > self.cap:
            # room for 25% more targets than the most seen so far, in multiples of 64 rows
            full = batch["inputs"].numel()
            self.cap = min(full, -(-int(1.25 * self.most_targets) // 64) * 64)
            self._capture(batch)
            self.captures += 1
        self.inputs.copy_(batch["inputs"])
        self.targets.copy_(batch["targets"])
        self.user.copy_(batch["user"])
        self.graph.replay()
        return self.loss

    def _step(self, inputs: Tensor, targets: Tensor, user: Tensor, cap: int | None) -> Tensor:
        # autocast's weight-cast cache must be off inside a captured region
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
            loss = self.model._all_positions_loss(inputs, targets, user, cap)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _capture(self, batch: dict[str, Tensor]) -> None:
        self.inputs = batch["inputs"].clone()
        self.targets = batch["targets"].clone()
        self.user = batch["user"].clone()
        self.graph = None  # a re-capture frees the old graph's memory first
        graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # gradients then live in the graph's pool
        with torch.cuda.graph(graph):
            self.loss = self._step(self.inputs, self.targets, self.user, self.cap)
        self.graph = graph

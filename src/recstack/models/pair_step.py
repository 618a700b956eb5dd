"""The (user, positive, negatives) training epoch of MF and LightGCN, replayed as CUDA graphs (a
`recstack.training.trainer.EpochStep`).

An MF step is tiny: three gathers from the tables, a loss, their backward and an Adam update
of two tables (LightGCN adds its propagation over the graph). In eager PyTorch the GPU waits on
Python for most of it, and the negative sampler reads back to the host how many draws hit a
positive, once per batch. This epoch removes both:

* the epoch's permutation is copied once into a device buffer; a device counter says where the
  next batch starts, so a batch is gathered on the device (no host slicing per batch); the short
  last batch is padded with rows of weight 0, which change neither the loss (a weighted mean)
  nor the gradients;
* negatives are drawn inside the step with a fixed amount of work
  (`recstack.training.samplers.UniformSampler.sample_fixed`: draw, redraw the entries that hit
  a positive a fixed number of times, mask what is left out of the loss), from the CUDA
  generator, so nothing leaves the device;
* `unroll` consecutive steps (gather, forward, backward, Adam with ``capturable=True``) are
  captured as one CUDA graph and replayed; the epoch's last ``n_batches % unroll`` batches
  replay a one-step graph (a padded step would still move Adam's moments);
* a learning-rate change (the plateau schedule) captures the graphs again with the new rate.

`plan` says whether it applies (CUDA, Adam/AdamW, no gradient clipping, per-example negatives,
one process) and why not; where a capture itself fails, training goes on eagerly, batch by
batch, and says so. Off CUDA (tests) the same epoch runs eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from recstack.models.sequential.graph_step import GraphPlan, decide, step_obstacles
from recstack.training.trainer import TrainConfig, build_optimizer

if TYPE_CHECKING:
    from recstack.models.mf import MF

log = logging.getLogger(__name__)


def plan(model: MF, device: torch.device) -> GraphPlan:
    """Whether `model` trains with `GraphedPairStep`'s graphs under its ``cuda_graph`` setting.

    Raises:
        ValueError: ``cuda_graph="always"`` and the step does not apply (one line, the reason).
    """
    train = model.train_config
    if train.cuda_graph == "never":
        return GraphPlan(False, "cuda_graph=never")
    why = step_obstacles(train, device)
    if model.shared_negatives:
        why.append("shared_negatives (the graphed step draws negatives per example)")
    return decide(model.name, train.cuda_graph, why)


class GraphedPairStep:
    """A whole epoch of MF / LightGCN training as replays of CUDA graphs (module docstring).

    Args:
        model: the MF-family model being fitted (its ``module_`` and ``sampler_`` on one device).
        train: the optimisation settings.
        warmup: eager steps (on a side stream, as capture requires) before the first capture.
        unroll: training steps per graph replay.
        use_graph: False runs every step eagerly (off CUDA; tests).
    """

    def __init__(self, model: MF, train: TrainConfig, warmup: int = 3, unroll: int = 8,
                 use_graph: bool = True) -> None:
        self.model, self.module = model, model.module_
        self.device = next(self.module.parameters()).device
        self.batch_size, self.amp = train.batch_size, train.amp and self.device.type == "cuda"
        self.warmup, self.unroll = max(1, warmup), max(1, unroll)
        self.use_graph = use_graph and self.device.type == "cuda"
        cuda = self.device.type == "cuda"
        self.optimizer = build_optimizer(self.module, train, **({"fused": True, "capturable": True} if cuda else {}))
        self.steps = 0
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_lr: tuple[float, ...] | None = None
        self.examples: dict[str, Tensor] | None = None
        self.failed: str | None = None  # why a capture failed: the steps then run eagerly

    # ---- the epoch -----------------------------------------------------------------------------
    def run_epoch(self, examples: dict[str, Tensor], perm: Tensor,
                  progress: Callable[[int], None] | None = None) -> Tensor:
        """Train one epoch on `examples` in `perm` order; returns the summed batch losses."""
        n_batches = self._load(examples, perm)
        done = 0
        while done < n_batches:
            k = self.unroll if n_batches - done >= self.unroll else 1
            self.model._invalidate_tables()  # a replayed optimiser step bumps no version counter
            if not self.use_graph or self.failed is not None or self.steps < self.warmup:
                k = 1
                self._eager()
            else:
                self._replay(k)
            self.steps += k
            done += k
            if progress is not None:
                progress(done)
        return self.total.clone()

    def _load(self, examples: dict[str, Tensor], perm: Tensor) -> int:
        """Copy the epoch's order into the static buffers the graphs read; returns the batches."""
        b, n = self.batch_size, len(perm)
        n_batches = -(-n // b)
        if self.examples is not examples or self.perm.numel() != n_batches * b:
            self.examples = examples  # the model's training tensors: the same every epoch
            self.perm = torch.zeros(n_batches * b, dtype=torch.long, device=self.device)
            self.offsets = torch.arange(b, device=self.device)
            self.n = torch.tensor(n, device=self.device)
            self.pos = torch.zeros((), dtype=torch.long, device=self.device)
            self.total = torch.zeros((), device=self.device)
            self.graphs = {}
        self.perm[:n].copy_(perm)
        self.pos.zero_()
        self.total.zero_()
        return n_batches

    def _steps(self, k: int) -> None:
        """`k` training steps from the buffers: what a graph records and what eager mode runs."""
        for _ in range(k):
            at = self.pos + self.offsets
            rows = self.perm[at]
            batch = {name: t[rows] for name, t in self.examples.items()}
            batch["weight"] = (at < self.n).float()  # padding rows of the short last batch: 0
            self.optimizer.zero_grad(set_to_none=True)
            # autocast's weight-cast cache must be off inside a captured region
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
                loss = self.model._graph_loss(batch)
            loss.backward()
            self.optimizer.step()
            self.total += loss.detach().float()
            self.pos += self.batch_size

    def _eager(self) -> None:
        if self.device.type != "cuda":
            self._steps(1)
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self._steps(1)
        torch.cuda.current_stream(self.device).wait_stream(side)

    def _replay(self, k: int) -> None:
        lr = tuple(float(g["lr"]) for g in self.optimizer.param_groups)
        if lr != self.graph_lr:
            self.graphs, self.graph_lr = {}, lr
        if k not in self.graphs:
            try:
                self._capture(k)
            except RuntimeError as e:  # e.g. a kernel that cannot be captured: train on, say why
                self.failed, self.graphs = str(e).splitlines()[0][:200], {}
                log.warning("%s: CUDA graph capture failed (%s); training eagerly", self.model.name, self.failed)
                torch.cuda.synchronize(self.device)
                for _ in range(k):
                    self._eager()
                return
        self.graphs[k].replay()

    def _capture(self, k: int) -> None:
        # capturing records the steps without running them: pos and total are not moved
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._steps(k)
        self.graphs[k] = graph

"""The one training loop every neural recstack model uses.

The model hands over its training examples as tensors already on the device and a loss
function over a batch of them; the trainer shuffles with its own generator, slices batches
(no DataLoader, no per-sample Python), steps the optimiser under bf16 autocast on GPU,
validates, stops early, checkpoints atomically every epoch and resumes exactly.
Under torchrun (a process group of more than one rank) it trains data-parallel with DDP, each
rank on its part of every global batch (`recstack.distributed.ddp`); rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from recstack.distributed.ddp import DataParallelLoss
from recstack.distributed.env import is_distributed
from recstack.progress import ProgressBar, bar, bars_enabled
from recstack.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)
LossFn = Callable[[dict[str, torch.Tensor], torch.Generator], torch.Tensor]
_WARMUP_BATCHES = 5  # left out of the steady-state throughput of an epoch
#: TrainConfig fields a resumed run may change: they do not alter what was trained so far
#: (``epochs``: train longer; where logs and checkpoints go; progress display)
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {"epochs", "progress", "log_path", "checkpoint_dir", "tensorboard_dir", "cuda_graph"})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainStep(Protocol):
    """A model's own training step (e.g. DLRM's fused, CUDA-graphed one), used by the trainer in
    place of its autocast -> loss -> backward -> optimiser step.

    ``prepare`` runs one batch ahead (on a side CUDA stream when on the GPU): work that reads no
    weights, such as sorting the batch's table rows, overlaps the running step. ``__call__``
    trains on a prepared batch and returns its loss as a device scalar. ``optimizer`` is what
    the trainer checkpoints and schedules."""

    optimizer: torch.optim.Optimizer

    def prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Any]: ...

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor: ...


@runtime_checkable
class EpochStep(Protocol):
    """A model's own training step that runs a whole epoch itself, e.g. several batches per
    CUDA graph replay so that the host does no work per batch (MF's graphed step).

    ``run_epoch`` trains on `examples` in `perm` order, in batches of the configured size (the
    last one short), and returns the sum of the batch losses as a device scalar, as the
    trainer's own loop does; it calls ``progress(batches_done)`` now and then. ``optimizer`` is
    what the trainer checkpoints and schedules."""

    optimizer: torch.optim.Optimizer

    def run_epoch(self, examples: dict[str, torch.Tensor], perm: torch.Tensor,
                  progress: Callable[[int], None] | None = None) -> torch.Tensor: ...


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, tuple | list):
        for v in x:
            yield from _tensors(v)


def one_ahead(make: Callable[[int], Any], n: int, device: torch.device) -> Iterator[Any]:
    """``make(0), ..., make(n - 1)``, each made while the previous one is being used: on CUDA on
    a side stream, so a host sync inside `make` waits for that work only, not for the step
    enqueued before it (the GPU keeps running it)."""
    if device.type != "cuda":
        for i in range(n):
            yield make(i)
        return
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(main)  # the epoch's permutation, made on the main stream

    def start(i: int) -> Any:
        with torch.cuda.stream(side):
            return make(i) if i < n else None

    ready = start(0)
    for i in range(n):
        cur = ready
        main.wait_stream(side)
        for t in _tensors(cur):
            t.record_stream(main)  # allocated on the side stream, used (and freed) on the main one
        ready = start(i + 1)
        yield cur


@dataclass
class TrainConfig:
    """Optimisation settings shared by all neural models (`--set key=value` reaches them)."""

    epochs: int = 50
    batch_size: int = 4096
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_embeddings: bool = False  # apply weight decay to embedding tables too
    optimizer: str = "adam"  # adam | adamw | sgd | sparse_adam | adagrad
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    patience: int = 5  # evaluations without improvement before stopping; 0 = never stop early
    eval_every: int = 1
    monitor: str = "ndcg@20"
    plateau_factor: float = 0.5  # ReduceLROnPlateau factor; 1.0 = off
    plateau_patience: int = 2
    amp: bool = True  # bf16 autocast on CUDA
    seed: int = 0
    checkpoint_dir: str | None = None
    log_path: str | None = None
    tensorboard_dir: str | None = None  # written when the tensorboard package is installed
    progress: bool = True
    # torch.distributed runs only: DDP's search for parameters a step did not use costs a graph
    # traversal per step; models that use every parameter in every step can turn it off
    ddp_find_unused: bool = True
    ddp_bf16_grads: bool = False  # all-reduce gradients in bf16 (half the bytes; NCCL/CUDA)
    # capture each training step (forward, backward, optimiser) as one CUDA graph where the model
    # has such a step (sequence models): "auto" = on CUDA whenever it applies, "always" = fail
    # with the reason when it does not, "never" = the plain step
    cuda_graph: Literal["auto", "always", "never"] = "auto"


@dataclass
class TrainResult:
    best_epoch: int
    best_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    epochs_run: int = 0


def build_optimizer(module: nn.Module, cfg: TrainConfig, **adam_options: Any) -> torch.optim.Optimizer:
    """Adam/AdamW/Adagrad with weight decay on weights only: never on biases or norms, and on
    embedding tables only when `decay_embeddings`; or SparseAdam for sparse-gradient tables.
    `adam_options` (e.g. ``fused=True, capturable=True`` for a CUDA-graphed step) go to
    Adam/AdamW only."""
    decay, no_decay = [], []
    emb_params = {
        id(p)
        for m in module.modules()
        if isinstance(m, nn.Embedding | nn.EmbeddingBag)
        for p in m.parameters()
    }
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        is_bias = p.ndim < 2 or name.endswith(".bias")
        if is_bias or (id(p) in emb_params and not cfg.decay_embeddings):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    name = cfg.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **adam_options)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **adam_options)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr)
    if name == "sparse_adam":
        return torch.optim.SparseAdam([p for g in groups for p in g["params"]], lr=cfg.lr)
    raise ValueError(
        f"unknown optimizer '{cfg.optimizer}': use adam, adamw, sgd, adagrad or sparse_adam"
    )


class Trainer:
    """Runs `fit`; holds no state between calls besides its config."""

    def __init__(self, config: TrainConfig | None = None, hparams: dict[str, Any] | None = None) -> None:
        """`hparams`: the model's hyper-parameters (JSON values), stored with each checkpoint and
        compared on resume like the training settings."""
        self.config = config or TrainConfig()
        self.hparams = hparams

    def fit(
        self,
        module: nn.Module,
        loss_fn: LossFn,
        examples: dict[str, torch.Tensor],
        validate: Callable[[], dict[str, float]] | None = None,
        device: torch.device | None = None,
        make_optimizer: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] | None = None,
        train_step: TrainStep | EpochStep | None = None,
    ) -> TrainResult:
        """Train `module` on `examples` (aligned tensors, first dimension = examples).

        `validate()` returns metrics (higher is better for `monitor`); the best epoch's weights
        are restored at the end. With a checkpoint_dir, an existing checkpoint is resumed (``last``,
        else the ``last.old`` a crash can leave), unless it was written with other settings than
        `RESUMABLE_CHANGES` allow, or for another model shape: then CheckpointError, one line.
        `make_optimizer(module, config)` replaces `build_optimizer`, for models whose parts
        want different optimisers (e.g. FTRL for a wide part, row-wise Adagrad for sparse tables).
        `train_step` replaces the per-batch step (see `TrainStep`), or the whole epoch's loop
        (see `EpochStep`), and its optimiser; the loss function is then not called. Not
        combined with torch.distributed.
        """
        cfg = self.config
        device = device or next(module.parameters()).device
        n = len(next(iter(examples.values())))
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if train_step is not None and is_distributed():
            raise ValueError("Trainer: a model's own train_step is not combined with torch.distributed")
        opt = train_step.optimizer if train_step is not None else (make_optimizer or build_optimizer)(module, cfg)
        sched = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
            if cfg.plateau_factor < 1.0
            else None
        )
        use_amp = cfg.amp and device.type == "cuda"
        state: dict[str, Any] = {
            "epoch": 0,
            "best_epoch": -1,
            "best_value": -math.inf,
            "best_metrics": {},
            "bad_evals": 0,
            "history": [],
        }
        best_weights: dict[str, torch.Tensor] | None = None
        ckpt = Path(cfg.checkpoint_dir) / "last" if cfg.checkpoint_dir else None
        found = latest_checkpoint(ckpt) if ckpt is not None else None
        if found is not None:
            saved = load_checkpoint(found, device)
            self._check_resumable(found, saved, module)
            module.load_state_dict(saved["model"])
            try:
                opt.load_state_dict(saved["optimizer"])
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"cannot resume from {found}: its optimizer state does not fit this "
                                      f"run's ({str(e).splitlines()[0]}); use a new checkpoint_dir") from None
            if sched is not None and saved.get("scheduler"):
                sched.load_state_dict(saved["scheduler"])
            gen.set_state(saved["generator"].cpu())
            torch.set_rng_state(saved["torch_rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in saved:
                torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), device)
            best_weights = saved.get("best_weights")
            state = saved["trainer"]
            log.info("resumed from %s at epoch %s", found, state["epoch"])
        # under torchrun: DDP on each rank's slice of every global batch; rank 0 alone writes
        ddp = (DataParallelLoss(module, loss_fn, device, ckpt is not None, find_unused=cfg.ddp_find_unused,
                                bf16_grads=cfg.ddp_bf16_grads) if is_distributed() else None)
        main = ddp is None or ddp.rank == 0

        t_start = time.perf_counter()
        n_batches = math.ceil(n / cfg.batch_size)
        stop = False
        epoch = state["epoch"]
        for epoch in range(state["epoch"], cfg.epochs):
            module.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen, device=device)  # the same on every rank
            prog = bar(f"epoch {epoch + 1}/{cfg.epochs}", n_batches) if cfg.progress and main and bars_enabled() else None
            with prog or contextlib.nullcontext():
                total = self._epoch(module, loss_fn, examples, perm, opt,
                                    gen if ddp is None else ddp.sample_generator(cfg.seed, epoch),
                                    use_amp, prog, f"epoch {epoch + 1}/{cfg.epochs}", ddp, train_step)
            if ddp is not None:
                total = ddp.average(total)
                ddp.sync_buffers()  # one set of BatchNorm statistics for validation and checkpoints
            train_loss = float(total) / n_batches
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": train_loss,
                "seconds": time.perf_counter() - t0,
                # training examples per second on this rank after the epoch's first batches
                "samples_per_s": self.steady_samples_per_s_,
                "lr": opt.param_groups[0]["lr"],
            }
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"training loss became {train_loss} at epoch {epoch + 1}; lower lr or enable grad_clip"
                )
            if validate is not None and (epoch + 1) % cfg.eval_every == 0:
                module.eval()
                t_valid = time.perf_counter()
                with torch.no_grad():
                    metrics = validate()
                row["validation_seconds"] = time.perf_counter() - t_valid
                row.update({f"valid_{k}": v for k, v in metrics.items()})
                value = metrics[cfg.monitor]
                if sched is not None:
                    sched.step(value)
                if value > state["best_value"]:
                    state.update(
                        best_value=value, best_epoch=epoch + 1, best_metrics=metrics, bad_evals=0
                    )
                    best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    state["bad_evals"] += 1
                    stop = cfg.patience > 0 and state["bad_evals"] >= cfg.patience
            row["elapsed_seconds"] = time.perf_counter() - t_start  # since this fit started
            row["finished_at"] = time.time()  # wall clock (Unix seconds): time to the best epoch
            state["history"].append(row)
            state["epoch"] = epoch + 1
            if main:
                self._report(row)
            if ckpt is not None and main:  # world-size independent: weights are replicated
                payload = {
                    "model": module.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else {},
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "trainer": state,
                    "config": self._fingerprint(),
                }
                if device.type == "cuda":
                    payload["cuda_rng"] = torch.cuda.get_rng_state(device)
                if best_weights is not None:
                    payload["best_weights"] = best_weights
                save_checkpoint(ckpt, payload)
            if stop:
                break
        if best_weights is not None:
            module.load_state_dict(best_weights)
        module.eval()
        return TrainResult(
            best_epoch=state["best_epoch"],
            best_metrics=state["best_metrics"],
            history=state["history"],
            seconds=time.perf_counter() - t_start,
            epochs_run=state["epoch"],
        )

    def _epoch(self, module: nn.Module, loss_fn: LossFn, examples: dict[str, torch.Tensor],
               perm: torch.Tensor, opt: torch.optim.Optimizer, gen: torch.Generator, use_amp: bool,
               prog: ProgressBar | None, label: str,
               ddp: DataParallelLoss | None = None, train_step: TrainStep | EpochStep | None = None) -> torch.Tensor:
        """One pass over the examples in `perm` order; returns the summed batch losses.
        With `ddp`, each global batch is cut to this rank's part (see DataParallelLoss); with
        `train_step`, its `prepare` runs one batch ahead and it trains on each batch."""
        cfg = self.config
        n_batches = math.ceil(len(perm) / cfg.batch_size)
        device = perm.device
        total = torch.zeros((), device=device)
        # steady-state throughput: the clock starts after the first batches (allocator, kernel
        # selection, compilation), with a device sync at both ends; a short epoch counts whole
        warm = _WARMUP_BATCHES if n_batches > 2 * _WARMUP_BATCHES else 0
        self.steady_ = (time.perf_counter(), 0)
        if isinstance(train_step, EpochStep):
            def progress(done: int) -> None:
                if prog is not None and (done == n_batches or prog.due()):
                    prog.update(prog.task_ids[0], completed=done, description=label)

            total = train_step.run_epoch(examples, perm, progress)
            _sync(device)
            self.steady_samples_per_s_ = len(perm) / max(time.perf_counter() - self.steady_[0], 1e-9)
            return total
        prepared = None
        if train_step is not None:
            prepared = one_ahead(lambda i: train_step.prepare(
                {k: v[perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]] for k, v in examples.items()}, gen),
                n_batches, device)
        for b in range(n_batches):
            if b == warm:
                _sync(device)
                self.steady_ = (time.perf_counter(), sum(min(cfg.batch_size, len(perm) - i * cfg.batch_size)
                                                        for i in range(warm)))
            if prepared is not None:
                total += train_step(next(prepared)).float()
            else:
                idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                weight = 1.0
                if ddp is not None:
                    idx, weight = ddp.shard(idx)
                batch = {k: v[idx] for k, v in examples.items()}
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = loss_fn(batch, gen) if ddp is None else ddp(batch, gen, weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.detach().float()
            if prog is not None and (b % 50 == 49 or b == n_batches - 1 or prog.due()):
                # reading the loss syncs the GPU: every 50 batches, or once a second when slower
                prog.update(prog.task_ids[0], completed=b + 1,
                            description=f"{label} loss={float(total) / (b + 1):.4f}")
        _sync(device)
        t0, skipped = self.steady_
        self.steady_samples_per_s_ = (len(perm) - skipped) / max(time.perf_counter() - t0, 1e-9)
        return total

    def _report(self, row: dict[str, Any]) -> None:
        cfg = self.config
        if cfg.tensorboard_dir:
            if not hasattr(self, "_tb"):
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(cfg.tensorboard_dir)
                except ImportError:
                    from recstack.optional import message

                    log.warning("%s (ignored)", message("tensorboard_dir", "tracking"))
                    self._tb = None
            if self._tb is not None:
                for k, v in row.items():
                    if k != "epoch" and isinstance(v, int | float):
                        self._tb.add_scalar(k, v, row["epoch"])
                self._tb.flush()
        if cfg.log_path:
            Path(cfg.log_path).parent.mkdir(parents=True, exist_ok=True)
            with open(cfg.log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
        extra = " ".join(f"{k[6:]}={v:.4f}" for k, v in row.items() if k.startswith("valid_"))
        log.log(logging.INFO if cfg.progress else logging.DEBUG, "epoch %3d/%d loss=%.4f %s(%.1fs)",
                row["epoch"], cfg.epochs, row["loss"], f"{extra} " if extra else "", row["seconds"])

    def _fingerprint(self) -> dict[str, Any]:
        """What a checkpoint records of the run that wrote it: training settings (JSON values)
        and, where the caller gave them, the model's hyper-parameters."""
        out: dict[str, Any] = {"train": json.loads(json.dumps(asdict(self.config), default=str))}
        if self.hparams is not None:
            out["model"] = json.loads(json.dumps(self.hparams, default=str))
        return out

    def _check_resumable(self, path: Path, saved: dict[str, Any], module: nn.Module) -> None:
        """Refuse, in one line, a checkpoint written with other settings or another model shape.

        Raises:
            CheckpointError: naming each setting that differs (``lr=0.001`` in the checkpoint,
                ``lr=0.01`` now), or the first tensor whose shape differs.
        """
        if not isinstance(saved, dict) or not {"model", "optimizer", "trainer", "generator"} <= set(saved):
            raise CheckpointError(f"checkpoint file {path / 'state.json'} is not a trainer checkpoint "
                                  "(missing model/optimizer/trainer state); delete it to start over")
        written = saved.get("config")
        if isinstance(written, dict):  # checkpoints from before 2026-12 have none: nothing to compare
            now = self._fingerprint()
            diffs = []
            for part, skip in (("train", RESUMABLE_CHANGES), ("model", frozenset())):
                a, b = written.get(part), now.get(part)
                if not isinstance(a, dict) or not isinstance(b, dict):
                    continue
                for key in sorted(set(a) | set(b)):
                    if key in skip or a.get(key) == b.get(key):
                        continue
                    diffs.append((key, a.get(key, "<unset>"), b.get(key, "<unset>")))
            if diffs:
                was = ", ".join(f"{k}={v}" for k, v, _ in diffs)
                has = ", ".join(f"{k}={w}" for k, _, w in diffs)
                raise CheckpointError(
                    f"cannot resume from {path}: checkpoint was written with {was}, this run has {has}; "
                    "restore those settings, or use a new checkpoint_dir (only "
                    f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume)")
        mine = module.state_dict()
        theirs = saved["model"]
        if not isinstance(theirs, dict):
            raise CheckpointError(f"checkpoint file {path / 'state.json'} holds no model weights; delete it")
        missing = [k for k in mine if k not in theirs]
        extra = [k for k in theirs if k not in mine]
        if missing or extra:
            raise CheckpointError(
                f"cannot resume from {path / 'state.safetensors'}: it holds another model's weights "
                f"(missing {missing[:3]}, unexpected {extra[:3]}); use a new checkpoint_dir")
        for k, v in mine.items():
            w = theirs[k]
            if isinstance(v, torch.Tensor) and isinstance(w, torch.Tensor) and tuple(v.shape) != tuple(w.shape):
                raise CheckpointError(
                    f"cannot resume from {path / 'state.safetensors'}: '{k}' has shape {tuple(w.shape)} there, "
                    f"{tuple(v.shape)} in this run (a changed dim or data set?); use a new checkpoint_dir")

    def config_dict(self) -> dict[str, Any]:
        return asdict(copy.deepcopy(self.config))


def steady_samples_per_s(history: list[dict[str, Any]]) -> float | None:
    """Steady-state training throughput of a run: the median over its epochs of the examples
    per second after each epoch's first batches (`Trainer`'s ``samples_per_s``)."""
    import statistics

    values = [h["samples_per_s"] for h in history if h.get("samples_per_s")]
    return round(statistics.median(values), 1) if values else None

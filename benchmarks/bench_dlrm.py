"""DLRM training throughput on synthetic Criteo-like batches (fwd + bwd + optimiser step).

26 categorical fields with Criteo Kaggle cardinalities capped at --max-rows (1M: 26 tables of up
to 1M rows, 5.57M rows in all), 13 dense features, embedding dim 128, batch 65,536, bf16 autocast
on CUDA, MLPerf-style MLPs (bottom 512-256-dim, top 1024-1024-512-256-1; --mlp kaggle: top 512-256-1).

What makes the step fast:
* one fused table for all 26 fields (one gather, one sparse gradient), not 26 modules;
* sparse gradients + row-wise Adagrad that touches only the batch's rows, with a sync-free
  duplicate merge (sort + fixed-size segment sum): no host sync anywhere in the loop;
* fused Adam for the MLPs; optional torch.compile of everything after the lookup (--compile);
* batches pre-generated on the device (the timed loop measures the model, not the data).

Reports samples/s and the achieved fraction of a peak memory bandwidth (--peak-bw, H100 SXM
3.35e12 B/s) for an estimate of the bytes a step must move: embedding rows read (B*F*D), the
gathered output written and its gradient written and read (3*B*F*D*4 B), and for each distinct
row of the batch its weights and accumulator read and written.

    python benchmarks/bench_dlrm.py --device cuda                # the H100 run
    python benchmarks/bench_dlrm.py --device cuda --compare-unfused --compile
    python benchmarks/bench_dlrm.py --device cpu --small         # smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig
from recstack.features.pipeline import Layout
from recstack.models.ctr.fast_path import FusedDLRMStep
from recstack.models.ctr.fused_table import DedupPrefetcher, RowWiseAdagradTable
from recstack.models.ctr.models.dlrm import DLRMConfig, DLRMNet
from recstack.models.ctr.optim import RowWiseAdagrad
from recstack.training.trainer import TrainConfig


def make_batches(gen: SyntheticCTR, n_batches: int, batch: int, device: torch.device) -> list[dict]:
    """Synthetic batches as the pipeline would produce them (code 0 = missing), on the device."""
    out = []
    for k in range(n_batches):
        s = gen.sample(batch, chunk=k)
        num = np.nan_to_num(np.log1p(np.maximum(s["dense"], 0.0)))
        out.append({
            "cat": torch.as_tensor(s["sparse"] + 1, device=device),
            "num": torch.as_tensor(num, dtype=torch.float32, device=device),
            "emb": torch.zeros(batch, 0, device=device),
            "label": torch.as_tensor(s["label"], dtype=torch.float32, device=device),
        })
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, batches: list[dict], warmup: int, steps: int, device: torch.device, before=None) -> float:
    """Seconds per call of fn(batch) after warm-up (no host sync inside the timed loop);
    `before(batch)`, when given, runs first each iteration (e.g. prefetching the next batch)."""
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        b = batches[i % len(batches)]
        if before is not None:
            before(b)
        fn(b)
    sync(device)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke test")
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--max-rows", type=int, default=1_000_000, help="cap on each table's rows")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--pool", type=int, default=8, help="distinct pre-generated batches cycled")
    ap.add_argument("--embedding-lr", type=float, default=0.05)
    ap.add_argument("--table-optimizer", default="rowwise_adagrad", choices=["rowwise_adagrad", "sgd"])
    ap.add_argument("--table-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the dense part")
    ap.add_argument("--table-mode", default="sparse", choices=["sparse", "fused", "kernels"],
                    help="sparse: sparse gradients + RowWiseAdagrad; fused: RowWiseAdagradTable "
                         "(gradient stops at the gathered rows, optimiser fused into the table); "
                         "kernels: RowWiseAdagradTable read by DLRM.forward_rows (lookup + interaction "
                         "in one Triton kernel, duplicate merge + row-wise Adagrad in two more)")
    ap.add_argument("--mlp", default="mlperf", choices=["mlperf", "kaggle"],
                    help="MLP sizes: mlperf (bottom 512-256-dim, top 1024-1024-512-256-1) or the DLRM "
                         "repository's Criteo Kaggle shape (bottom 512-256-dim, top 512-256-1)")
    ap.add_argument("--compile-lookup", action="store_true",
                    help="with --table-mode fused: compile the gather from the distinct rows together "
                         "with the dense part (one graph from the lookup to the logits)")
    ap.add_argument("--prefetch-dedup", action="store_true",
                    help="with --table-mode fused: dedup the next batch's rows on a side stream while the "
                         "current step runs (DedupPrefetcher), so unique's host sync overlaps GPU work")
    ap.add_argument("--cuda-graph", action="store_true",
                    help="with --table-mode kernels on CUDA: capture forward, backward and the MLPs' Adam "
                         "step in one CUDA graph (static shapes; replayed per batch after copying its "
                         "inputs in); the table's merge + update, whose size varies, run after each replay")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of 5 steps")
    ap.add_argument("--compare-unfused", action="store_true",
                    help="also time fwd+bwd of 26 separate EmbeddingBag modules in a Python loop")
    ap.add_argument("--peak-bw", type=float, default=3.35e12, help="peak memory bandwidth, bytes/s")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    ap.add_argument("--out", default="benchmarks/results/issue5/dlrm.jsonl")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.small:
        args.batch, args.dim, args.max_rows = min(args.batch, 2048), min(args.dim, 16), min(args.max_rows, 5000)
        args.steps, args.warmup, args.pool = min(args.steps, 5), min(args.warmup, 2), min(args.pool, 2)
    device = torch.device(args.device)
    torch.manual_seed(0)

    gen = SyntheticCTR(SyntheticCTRConfig(max_cardinality=args.max_rows))
    sizes = [int(c) + 1 for c in gen.cards]  # + the "missing" code 0
    layout = Layout(cat_names=[f"C{i + 1}" for i in range(26)], cat_sizes=sizes,
                    num_names=[f"I{i + 1}" for i in range(13)])
    big_top = (1024, 1024, 512, 256) if args.mlp == "mlperf" else (512, 256)
    bottom, top = ((64, 32), (64, 32)) if args.small else ((512, 256), big_top)
    model = DLRMNet(layout, DLRMConfig(dim=args.dim, sparse=True, bottom=bottom, top=top, init_std=0.01, dropout=0.0)).to(device)
    table_dtype = getattr(torch, args.table_dtype)
    if args.table_mode in ("fused", "kernels") and args.table_optimizer != "rowwise_adagrad":
        raise SystemExit("--table-mode fused/kernels train with row-wise Adagrad only")
    if args.table_mode == "fused":
        # the model's own table is replaced: its dense part reads rows from the fused table
        model.embed.table = RowWiseAdagradTable(sizes, args.dim, lr=args.embedding_lr,
                                                dtype=table_dtype, init_std=0.01).to(device)
    table = model.embed.table
    if args.table_mode in ("sparse", "kernels"):
        table.weight.data = table.weight.data.to(table_dtype)
    batches = make_batches(gen, args.pool, args.batch, device)
    step_lib = None
    if args.table_mode == "kernels":
        # the product's fast path (`recstack train --model dlrm`): the library's step, over the
        # model's own table, with its optimisers (Adam on the MLPs, row-wise Adagrad on the table)
        if args.cuda_graph and device.type != "cuda":
            raise SystemExit("--cuda-graph needs CUDA")
        step_lib = FusedDLRMStep(model, TrainConfig(lr=1e-3, amp=device.type == "cuda"), args.embedding_lr,
                                 graph=args.cuda_graph)
        table = step_lib.table

    dense_params = [p for n, p in model.named_parameters() if p is not model.embed.table.weight]
    fused = device.type == "cuda"
    if args.cuda_graph and args.table_mode != "kernels":
        raise SystemExit("--cuda-graph needs --table-mode kernels")
    dense_opt = (torch.optim.Adam(dense_params, lr=1e-3, fused=True) if fused
                 else torch.optim.Adam(dense_params, lr=1e-3))
    if step_lib is not None:
        dense_opt, table_opt = step_lib.dense_opt, step_lib.table_opt
    elif args.table_mode == "fused":
        table_opt = table
    else:
        table_opt = (RowWiseAdagrad([table.weight], lr=args.embedding_lr) if args.table_optimizer == "rowwise_adagrad"
                     else torch.optim.SGD([table.weight], lr=args.embedding_lr))
    dense_fn = torch.compile(model.dense) if args.compile else model.dense
    if args.compile and args.table_mode == "kernels":  # the MLPs around the fused interaction
        model.bottom, model.top = torch.compile(model.bottom), torch.compile(model.top)
    amp = device.type == "cuda"

    def lookup_dense(num: torch.Tensor, slot: torch.Tensor, leaf: torch.Tensor) -> torch.Tensor:
        return model.dense(num, F.embedding(slot, leaf))

    lookup_fn = torch.compile(lookup_dense) if args.compile_lookup else None

    if args.prefetch_dedup and args.table_mode == "sparse":
        raise SystemExit("--prefetch-dedup needs --table-mode fused or kernels")
    prefetch: dict[int, tuple] = {}  # id(batch codes) -> its dedup, filled one step ahead

    def forward_loss(b: dict) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if args.table_mode == "kernels":
                sorted_rows = prefetch.pop(id(b["cat"]), None) or table.sort(b["cat"])
                logits = model.forward_rows(b["num"], table, sorted_rows)
            elif lookup_fn is not None and model.training and torch.is_grad_enabled():
                slot, leaf = table.distinct(b["cat"], prefetch.pop(id(b["cat"]), None))
                torch._dynamo.mark_dynamic(leaf, 0)  # the distinct-row count changes every batch
                logits = lookup_fn(b["num"], slot, leaf)
            else:
                e = table(b["cat"])  # one gather for all 26 fields
                logits = dense_fn(b["num"], e)
        return F.binary_cross_entropy_with_logits(logits.float(), b["label"])

    def train_step(b: dict) -> None:
        loss = forward_loss(b)
        dense_opt.zero_grad(set_to_none=True)
        table_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()
        table_opt.step()

    def fwd_bwd(b: dict) -> None:
        model.zero_grad(set_to_none=True)
        if args.table_mode in ("fused", "kernels"):
            table.reset()  # fwd + bwd only: the recorded lookups are never applied
        forward_loss(b).backward()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for i in range(3):
            train_step(batches[i % len(batches)])
        sync(device)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for i in range(5):
                train_step(batches[i % len(batches)])
            sync(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25), flush=True)

    with torch.no_grad():
        first_loss = float(forward_loss(batches[0]))
    before = None
    if args.prefetch_dedup:
        n_total = args.warmup + args.steps
        pf = DedupPrefetcher(table, (batches[i % len(batches)]["cat"] for i in range(n_total + 1)),
                             sort=args.table_mode == "kernels")

        def before(b: dict) -> None:  # this batch's dedup was started one step ago
            codes, deduped = pf.next()
            assert codes is b["cat"]
            prefetch[id(codes)] = deduped

    step_fn = train_step
    if step_lib is not None:
        gen_t = torch.Generator(device=device)

        def step_fn(b: dict) -> None:  # the library's step on a prepared batch (rows sorted)
            sorted_rows = prefetch.pop(id(b["cat"]), None)
            prepared = (step_lib.prepare(b, gen_t) if sorted_rows is None
                        else {"num": b["num"], "label": b["label"], "sorted": sorted_rows})
            step_lib(prepared)

    t_step = timed(step_fn, batches, args.warmup, args.steps, device, before)
    t_fb = timed(fwd_bwd, batches, args.warmup, args.steps, device)
    with torch.no_grad():
        last_loss = float(forward_loss(batches[0]))

    # bytes a step must move (see the module docstring)
    b_, f_, d_ = args.batch, 26, args.dim
    w_bytes = table.weight.element_size()
    uniq = float(np.mean([torch.unique(b["cat"] + table.offsets).numel() for b in batches]))
    lookups = b_ * f_ * d_
    bytes_step = lookups * w_bytes + 3 * lookups * 4 + uniq * (2 * d_ * w_bytes + 2 * 4)
    if args.table_mode == "kernels":  # rows read twice (forward, recomputed in backward), their
        # gradient written and read once; per distinct row its fp32 gradient sum written and
        # read, weights and accumulator read and written
        bytes_step = 4 * lookups * w_bytes + uniq * (2 * d_ * 4 + 2 * d_ * w_bytes + 2 * 4)
    if args.table_optimizer == "sgd":
        bytes_step -= uniq * 2 * 4
    row = {
        "bench": "dlrm_train_step", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "small": args.small, "batch": args.batch, "dim": args.dim, "tables": 26, "table_rows": int(sum(sizes)),
        "max_table_rows": max(sizes), "table_dtype": args.table_dtype, "table_optimizer": args.table_optimizer,
        "compile": args.compile, "compile_lookup": args.compile_lookup, "prefetch_dedup": args.prefetch_dedup, "cuda_graph": args.cuda_graph, "amp_bf16": amp, "table_mode": args.table_mode,
        "mlp": "small" if args.small else args.mlp, "bottom": list(bottom), "top": list(top),
        "samples_per_s_train_step": round(args.batch / t_step),
        "samples_per_s_fwd_bwd": round(args.batch / t_fb),
        "ms_per_step": round(t_step * 1e3, 3),
        "unique_rows_per_batch": round(uniq),
        "est_bytes_per_step": int(bytes_step),
        "est_bandwidth_Bps": round(bytes_step / t_step),
        "peak_bw_Bps": args.peak_bw,
        "fraction_of_peak_bw": float(f"{bytes_step / t_step / args.peak_bw:.4g}"),
        "loss_first": round(first_loss, 4), "loss_after": round(last_loss, 4),
    }

    if args.compare_unfused:
        bags = nn.ModuleList(nn.EmbeddingBag(s, args.dim, mode="sum", sparse=True) for s in sizes).to(device)

        def unfused(b: dict) -> None:
            bags.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                e = torch.stack([bag(b["cat"][:, f : f + 1]) for f, bag in enumerate(bags)], 1)
                logits = model.dense(b["num"], e)
            F.binary_cross_entropy_with_logits(logits.float(), b["label"]).backward()

        row["samples_per_s_unfused_fwd_bwd"] = round(args.batch / timed(unfused, batches, args.warmup, args.steps, device))
        del bags
    print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

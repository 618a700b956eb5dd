"""Stream a Criteo-format file of any size through training with bounded memory.

1. Generate an N-row Criteo-format TSV with the synthetic generator, chunk by chunk.
2. Train one pass of a model over it, chunk by chunk: read (iter_criteo) -> feature pipeline
   (I1-I13 log + standardise fitted on the first chunk; C1-C26 hashed, nothing to fit) ->
   `CTRModel.partial_fit`. The last chunk is held out and scored (AUC, LogLoss).
3. Record the peak resident memory (getrusage ru_maxrss) after each phase, and the times.

Memory is bounded by the chunk size and the model (hash buckets x dim), never by N.

    python benchmarks/bench_criteo_stream.py --rows 2000000                 # a few minutes on CPU
    python benchmarks/bench_criteo_stream.py --rows 45000000 --device cuda  # the acceptance run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch

from recstack.data.criteo import iter_criteo, write_criteo
from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig
from recstack.features.pipeline import FeaturePipeline
from recstack.models.registry import create_model
from recstack.workflow.ctr import criteo_features


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    ap.add_argument("--file", default="/tmp/recstack_criteo_synthetic.tsv")
    ap.add_argument("--reuse-file", action="store_true", help="skip generation if the file exists")
    ap.add_argument("--keep-file", action="store_true")
    ap.add_argument("--model", default="dlrm")
    ap.add_argument("--hash-buckets", type=int, default=200_000, help="buckets per categorical field")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/issue5/criteo_stream.jsonl")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    row: dict = {"bench": "criteo_stream", "rows": args.rows, "chunk_rows": args.chunk_rows,
                 "model": args.model, "hash_buckets": args.hash_buckets, "dim": args.dim,
                 "batch": args.batch, "device": args.device}

    path = Path(args.file)
    t0 = time.perf_counter()
    if not (args.reuse_file and path.exists()):
        gen = SyntheticCTR(SyntheticCTRConfig(seed=args.seed))
        write_criteo(path, gen.frames(args.rows, args.chunk_rows))
    row["generate_seconds"] = round(time.perf_counter() - t0, 1)
    row["file_gib"] = round(path.stat().st_size / 2**30, 3)
    row["peak_rss_gib_after_generate"] = round(peak_rss_gib(), 3)

    n_chunks = -(-args.rows // args.chunk_rows)
    features = criteo_features(hash_buckets=args.hash_buckets)
    ranker = create_model(args.model, device=args.device, dim=args.dim, sparse=True, embedding_lr=0.05,
                          batch_size=args.batch, lr=1e-3, seed=args.seed, dropout=0.0, id_dropout=0.0)
    pipeline = FeaturePipeline(features)
    t0 = time.perf_counter()
    t_read = 0.0
    test = None
    stream = iter_criteo(path, chunk_rows=args.chunk_rows)
    for k in range(n_chunks):
        t1 = time.perf_counter()
        chunk = next(stream)
        t_read += time.perf_counter() - t1
        if k == 0:
            pipeline.fit(chunk)  # numeric statistics; hashed categories need no fitting
        if k == n_chunks - 1 and n_chunks > 1:
            test = chunk  # held out: the latest rows
            break
        ranker.partial_fit(chunk, pipeline)
        print(json.dumps({"chunk": k + 1, "of": n_chunks, "rows_trained": ranker.stream_rows_,
                          "seconds": round(time.perf_counter() - t0, 1),
                          "peak_rss_gib": round(peak_rss_gib(), 3)}), flush=True)
    train_seconds = time.perf_counter() - t0
    row.update(train_rows=ranker.stream_rows_, train_seconds=round(train_seconds, 1),
               read_parse_seconds=round(t_read, 1),
               train_rows_per_s=round(ranker.stream_rows_ / train_seconds),
               peak_rss_gib=round(peak_rss_gib(), 3))
    if test is not None:
        res = ranker.evaluate(test)
        row.update(test_rows=test.height, test_auc=round(res["auc"], 4), test_logloss=round(res["logloss"], 4))
    row["peak_rss_gib"] = round(peak_rss_gib(), 3)
    row["rss_bound_gib"] = 4.0
    row["within_bound"] = row["peak_rss_gib"] <= 4.0
    print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    if not args.keep_file:
        os.remove(path)


if __name__ == "__main__":
    main()

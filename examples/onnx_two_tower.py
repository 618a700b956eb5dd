# requires: onnxruntime
"""Two-tower -> ONNX -> onnxruntime: the same scores as PyTorch, to 1e-5.

Trains a small two-tower on the MovieLens ratings shipped inside recstack (two epochs on the
CPU), exports its user and item towers to ONNX with `recstack.export.export_model` (which
already runs and checks them), then scores 100 users against every item with onnxruntime
alone and compares with the model's own `score_all`:

    pip install "recstack[export]"
    python examples/onnx_two_tower.py

The same export from the command line: `recstack train --model two_tower --data embedded --out
run` then `recstack export-model run --format onnx --out run/onnx`. The bundled MovieLens data is
for non-commercial use (GroupLens' terms, in the data folder's README.txt).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from recstack.data.readers import load
from recstack.export import export_model
from recstack.models import create_model


def main() -> None:
    """Fit, export, score with onnxruntime, compare."""
    torch.manual_seed(0)
    data = load("embedded")
    model = create_model("two_tower", device="cpu", epochs=2, dim=32, tower=(64,), id_dim=32,
                         batch_size=512, progress=False).fit(data)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "onnx"
        manifest = export_model(model, out, format="onnx")
        print("exported:", {name: part["file"] for name, part in manifest["parts"].items()},
              f"(opset {manifest['opset']})")

        # onnxruntime only from here: raw ids -> indices through the vocabulary files
        raw_users = json.loads((out / "vocab.user.json").read_text())
        index = {raw: i for i, raw in enumerate(raw_users)}
        users = np.array([index[u] for u in raw_users[:100]], dtype=np.int64)
        items = np.arange(len(json.loads((out / "vocab.item.json").read_text())), dtype=np.int64)
        user_tower = ort.InferenceSession(str(out / "user_tower.onnx"), providers=["CPUExecutionProvider"])
        item_tower = ort.InferenceSession(str(out / "item_tower.onnx"), providers=["CPUExecutionProvider"])
        u = user_tower.run(["vector"], {"user": users})[0]
        v = item_tower.run(["vector"], {"item": items})[0]
        scores = u @ v.T  # [100, n_items]

    expected = model.score_all(torch.as_tensor(users)).numpy()
    diff = float(np.abs(scores - expected).max())
    print(f"{scores.shape[0]} users x {scores.shape[1]} items scored by onnxruntime; "
          f"max abs diff from PyTorch: {diff:.2e}")
    assert diff <= 1e-5, diff


if __name__ == "__main__":
    main()

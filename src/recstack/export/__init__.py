"""Model export: a fitted model's towers, sequence encoders and rankers to ONNX or
``torch.export``, checked by running the exported files; Faiss files readable by plain Faiss.

    from recstack.export import export_model
    export_model(model, "out/onnx", format="onnx")       # user_tower.onnx, item_tower.onnx, ...

Needs ``pip install "recstack[export]"`` (onnx, onnxscript, onnxruntime) for ONNX; the
``torch_export`` format needs PyTorch only. See docs/export.md.
"""

from recstack.export.faiss_files import write_faiss_index
from recstack.export.model_export import FORMATS, MANIFEST, export_model, run_onnx, run_torch_export
from recstack.export.parts import (
           UNSUPPORTED,
           UNSUPPORTED_FORMAT,
           ExportError,
           model_parts,
           supported_parts,
)

__all__ = ["ExportError", "FORMATS", "MANIFEST", "UNSUPPORTED", "UNSUPPORTED_FORMAT", "export_model", "model_parts",
           "run_onnx", "run_torch_export", "supported_parts", "write_faiss_index"]

"""Making a trained model smaller: magnitude pruning (:mod:`.prune`), channel pruning
(:mod:`.structured`), cross-layer equalisation (:mod:`.equalize`) and static INT8 with ONNX
Runtime's tools (:mod:`.quantize`).

Rule: torch allowed. May use the training loop (pruning fine-tunes) and the ONNX Runtime
backend (quantization measures accuracy in it)."""

"""Model backends (transformer first), the static KV cache, the decode engines, sampling, training.

Backends register in models/registry.py; a checkpoint becomes a module in models/loading.py; the decode step
in its four forms (reference, lean PyTorch, C, CUDA graph) is the engines/ package (engines/README.md).
Depends on v2m's core only: never on quant, stages or cli (docs/ARCHITECTURE.md).
"""

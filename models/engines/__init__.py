"""The decode step in its four forms — reference (`Transformer.forward_cached`), lean PyTorch (lean.py), C
(native.py + csrc/decode_step.c) and CUDA graph (graph.py) — and the Decoder that picks one (decoder.py).
Which runs when: README.md in this folder.

Takes a model module (a backend's nn.Module with `new_cache` / `forward_cached`) and token ids; gives logits
and sampled ids, one step per token, into a static KV cache.
"""

"""Model backends by name (`--backend transformer`).

A backend is an nn.Module class built from a ModelConfig that provides `forward(ids)`,
`new_cache(batch, max_len)` and `forward_cached(ids, cache, pos)` (docs/ARTIFACTS.md). To add one,
write models/<name>.py with `@BACKENDS.register("<name>")` on the class and add a lazy line below,
so that listing names never imports torch.
"""

from v2m.registry import Registry

BACKENDS = Registry("model backend")
BACKENDS.register_lazy("transformer", "v2m.models.transformer:Transformer")
BACKENDS.register_lazy("diffusion", "v2m.models.diffusion:Diffusion")


def build_model(config):
    """A freshly initialised model of `config.backend` (weights drawn from torch's global RNG)."""
    return BACKENDS.get(config.backend)(config)

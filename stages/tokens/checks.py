"""The checks of an artifact that need the tokenizer: ids inside its vocabulary, control classes inside its classes.

`artifacts.parse_artifact` has already checked types, ranges and sizes against the schema (v2m/schemas/); what
is left depends on which tokenizer reads the artifact, so the stage that opens one asks here before any work. The
vocabulary would otherwise clamp a density of 999 to its top class and index past its end on an id of 10⁹.
Problems are one line naming the field, like the schema's: `t.json: data.ids[7]: id 9000 is outside ...`.
"""

from __future__ import annotations

import numpy as np

from v2m.errors import V2MError


def check_ids(ids: list, vocab, name: str, where: str = "data.ids") -> None:
    """Every id of `ids` is one of the vocabulary's (0 ≤ id < len(vocab))."""
    if not ids:
        return
    array = np.asarray(ids, dtype=np.int64)
    bad = np.flatnonzero((array < 0) | (array >= len(vocab)))
    if bad.size:
        i = int(bad[0])
        raise V2MError(f"{name}: {where}[{i}]: id {int(array[i])} is outside the tokenizer's vocabulary "
                       f"(0..{len(vocab) - 1})", "decode it with the tokenizer it was made with (--tokenizer)")


def check_tokens(data: dict, vocab, name: str) -> None:
    """A v2m.tokens payload's ids (and samples') inside the vocabulary, and its controls' classes."""
    check_ids(data.get("ids") or [], vocab, name)
    for s, sample in enumerate(data.get("samples") or []):
        check_ids(sample, vocab, name, f"data.samples[{s}]")
    for role, part in sorted((data.get("parts") or {}).items()):
        check_ids(part, vocab, name, f"data.parts.{role}")
    if data.get("controls"):
        check_controls(data["controls"], vocab, name, "data.controls")


def check_controls(data: dict, vocab, name: str, where: str = "data", generating: bool = False) -> None:
    """A v2m.controls payload's classes inside the tokenizer's: tempo class and density (strength is 0..2 in the
    schema). `generating`: the global controls generate forces must be there too."""
    stats = vocab.stats
    n_density, n_tempo = int(stats["n_density"]), len(stats["tempo_bounds_bpm"]) + 1

    def refuse(field: str, problem: str) -> None:
        raise V2MError(f"{name}: {where}.{field}: {problem}", "make the controls with encode-tokens and the model's "
                                                              "tokenizer")

    if generating and "tempo_class" not in data:
        refuse("tempo_class", "missing")
    if "tempo_class" in data and not 0 <= data["tempo_class"] < n_tempo:
        refuse("tempo_class", f"class {data['tempo_class']} is outside the tokenizer's 0..{n_tempo - 1}")
    for i, bar in enumerate(data.get("bars") or []):
        if not 0 <= bar["density"] < n_density:
            refuse(f"bars[{i}].density", f"class {bar['density']} is outside the tokenizer's 0..{n_density - 1}")

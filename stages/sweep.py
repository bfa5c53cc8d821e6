"""sweep: quantize a float model several ways, score each against it on one corpus split, gate each row — as data.

A sweep file (TOML) lists rows; each row is what `v2m quantize` takes (scheme, method, their options) plus the
`--fail-if` gates of `v2m evaluate` (stages/evaluate/gates.py parses them). Every row is quantized into the
output folder and scored against the float model on the same held-out tokens; one `v2m.report` holds every row,
and stages/evaluate/ci.py renders it as a Markdown table and JUnit XML. The exit status is evaluate's: 1 when a
row could not be run (the others still run), else 3 when a gate failed.

    model = "model.safetensors"        # optional here; --model overrides (paths are relative to this file)
    corpus = "corpus/"                 # optional; --corpus overrides
    split = "auto"                     # scored split: auto = test, else val, else a held-out part of calib_split
    [defaults]                         # options every row gets unless it sets them
    group = 64
    [[row]]
    name = "w4-gptq"
    scheme = "w4"
    method = "gptq"
    gates = ["nll_delta>0.03", "kl>0.01"]

Calibration and scoring never share a piece: when the scored split is the calibration split (asked for, or
`auto` on a corpus without test/val pieces), every n-th piece is held out for scoring and the rest calibrate.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.quant.pipeline import QuantizeConfig
from v2m.stages.evaluate.gates import Gate, apply_gates, parse_gates
from v2m.stages.quantize import CalibrationSource, check_request, held_out, quantize_checkpoint

SEE_LIST = "v2m quantize --list shows the valid schemes × methods × kernels"
QUANTIZE_KEYS = {f.name: f.default for f in dataclasses.fields(QuantizeConfig)}
ROW_KEYS = {**QUANTIZE_KEYS, "name": "", "gates": [], "kernel": "auto", "calib_samples": 32, "calib_length": 256}
TOP_KEYS = {"model": "", "corpus": "", "split": "auto", "calib_split": "train", "holdout": 0.2, "max_tokens": 32768,
            "context": 0, "speed": True, "defaults": {}, "row": []}
MIN_SCORED_TOKENS = 256  # a split with fewer is not scored by `auto` (too few windows for a stable NLL)


@dataclass(frozen=True)
class Row:
    name: str
    config: QuantizeConfig
    gates: tuple[Gate, ...]
    kernel: str = "auto"
    calib_samples: int = 32
    calib_length: int = 256


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: the rows and the run's settings (model/corpus may still come from the command line)."""

    rows: tuple[Row, ...]
    model: str | None = None
    corpus: str | None = None
    split: str = "auto"
    calib_split: str = "train"
    holdout: float = 0.2
    max_tokens: int = 32768
    context: int = 0
    speed: bool = True
    settings: dict = field(default_factory=dict)  # as read (recorded in the report)


def _check_keys(table: dict, known: dict, where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise V2MError(f"{where}: unknown key '{unknown[0]}'", f"known keys: {', '.join(sorted(known))}")
    for key, value in table.items():
        default = known[key]
        expected = (int, float) if isinstance(default, float) else type(default)
        if default is None:  # group: an int or absent
            expected = int
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            if not (key == "gates" and isinstance(value, str)):
                raise V2MError(f"{where}: '{key}' must be {_kind(default)}, got {value!r}")


def _kind(default) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(default), "an integer")


def _takes(scheme: str, key: str) -> bool:
    """Whether a scheme takes --group / --asym (w8a8 and fp8 are per channel, nvfp4's blocks are fixed)."""
    from v2m.quant.formats import SCHEMES

    kind, _bits, _group, act = SCHEMES.get(scheme, ("int", 0, 0, "none"))
    return act == "none" and kind != "nvfp4" and (key == "group" or kind == "int")


def _gates(value, where: str) -> tuple[Gate, ...]:
    text = value if isinstance(value, str) else ",".join(value)
    try:
        return tuple(parse_gates(text))
    except V2MError as e:
        raise V2MError(f"{where}: {e.message}", e.hint)


def read_sweep(path: str) -> Sweep:
    """Parse and check a sweep file: unknown keys, wrong types, unknown schemes/methods and bad gates are one line
    each (naming the row), before any model is read."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise V2MError(f"{path}: no such sweep file", "see examples/sweep.toml")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise V2MError(f"{path}: not a readable TOML sweep file ({e})", "see examples/sweep.toml")
    _check_keys(raw, TOP_KEYS, path)
    defaults = raw.get("defaults", {})
    _check_keys(defaults, ROW_KEYS, f"{path} [defaults]")
    if not raw.get("row"):
        raise V2MError(f"{path}: no [[row]] tables", "add rows: [[row]] name = ... scheme = ... method = ...")
    rows, names = [], set()
    for i, table in enumerate(raw["row"], 1):
        where = f"{path} row {i}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
        if not isinstance(table, dict):
            raise V2MError(f"{where}: a row must be a table ([[row]])")
        _check_keys(table, ROW_KEYS, where)
        merged = {**defaults, **table}
        for key in ("group", "asym"):  # a default the row's scheme does not take is not applied to it
            if key in defaults and key not in table and not _takes(merged.get("scheme", "w8a8"), key):
                del merged[key]
        name = merged.get("name") or f"{merged.get('scheme', 'w8a8')}-{merged.get('method', 'rtn')}"
        if name in names or not name.replace("-", "").replace("_", "").replace("+", "").replace(".", "").isalnum():
            raise V2MError(f"{where}: row name '{name}' is " + ("used twice" if name in names else "not a plain file name"),
                           "give each row a distinct name of letters, digits, '-', '_', '+' or '.'")
        names.add(name)
        config = QuantizeConfig(**{k: merged[k] for k in QUANTIZE_KEYS if k in merged})
        try:
            check_request("row.safetensors", config, has_calibration=True)
        except V2MError as e:
            raise V2MError(f"{where}: {e.message}", e.hint if "--list" in (e.hint or "") else SEE_LIST)
        rows.append(Row(name, config, _gates(merged.get("gates", []), where), merged.get("kernel", "auto"),
                        merged.get("calib_samples", 32), merged.get("calib_length", 256)))
    here = p.parent

    def relative(key):
        return str(here / raw[key]) if raw.get(key) else None

    settings = {k: v for k, v in raw.items() if k not in ("row", "defaults", "model", "corpus")}
    sweep = Sweep(tuple(rows), relative("model"), relative("corpus"), **settings, settings=settings)
    if not 0.0 < sweep.holdout < 1.0:
        raise V2MError(f"{path}: holdout must be within 0..1 (exclusive), got {sweep.holdout}")
    return sweep


def select_rows(sweep: Sweep, names: list[str] | None) -> Sweep:
    """Only the rows named (in the file's order); an unknown name is one line listing the file's rows."""
    if not names:
        return sweep
    known = [r.name for r in sweep.rows]
    missing = [n for n in names if n not in known]
    if missing:
        raise V2MError(f"--rows: no row named '{missing[0]}'", f"the sweep's rows: {', '.join(known)}")
    return dataclasses.replace(sweep, rows=tuple(r for r in sweep.rows if r.name in names))


@dataclass(frozen=True)
class Scoring:
    """What is scored and what is calibrated on: the scored tokens (a Split) and the calibration source's split."""

    split: object             # v2m.models.data.Split
    calib_split: str
    holdout: float            # > 0: calibration leaves out the held-out pieces of calib_split
    described: str


def choose_scoring(corpus, split: str, calib_split: str, holdout: float) -> Scoring:
    """The scored split and calibration that never share a piece (see the module docstring); one line when impossible."""
    sizes = {name: int(info.get("tokens", 0)) for name, info in corpus.splits.items()}
    listing = ", ".join(f"{n} {sizes[n]:,} tokens" for n in sizes)
    if calib_split not in sizes or sizes[calib_split] < 2:
        raise V2MError(f"{corpus.path}: nothing to calibrate on: split '{calib_split}' is "
                       + ("missing" if calib_split not in sizes else "empty") + f" ({listing})",
                       "pass --calib-split with a split that has tokens")
    if split == "auto":
        split = next((s for s in ("test", "val") if sizes.get(s, 0) >= MIN_SCORED_TOKENS and s != calib_split), calib_split)
        if split == calib_split:
            log.info(f"{corpus.path} has no test or val split of ≥ {MIN_SCORED_TOKENS} tokens ({listing}): scoring a "
                     f"held-out {holdout:.0%} of the '{calib_split}' pieces, calibrating on the rest")
    elif split not in sizes or sizes[split] < 2:
        raise V2MError(f"{corpus.path}: the '{split}' split is " + ("missing" if split not in sizes else "empty")
                       + f" ({listing})", "pass --split auto (scores a held-out part of the calibration split) "
                                          "or --split with a split that has tokens")
    if split == calib_split:
        rest, held = held_out(corpus.load(split), holdout)
        return Scoring(held, calib_split, holdout, f"{split}: {held.pieces} held-out sequences of {held.pieces + rest.pieces} "
                                                   f"({len(held.tokens):,} tokens, whole pieces), calibration on the "
                                                   f"other {rest.pieces}")
    scored = corpus.load(split)
    return Scoring(scored, calib_split, 0.0, f"{split} ({scored.pieces} pieces, {len(scored.tokens):,} tokens); "
                                             f"calibration on {calib_split}")


def run_sweep(sweep: Sweep, model: str, corpus: str, out_dir: str, force: bool = False,
              progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run every row; returns the v2m.report artifact (mode "sweep", one row per sweep row). A row that fails to
    quantize or load is recorded under `failures` and the others still run."""
    from v2m.checkpoint import read_meta
    from v2m.models.data import read_corpus
    from v2m.models.loading import load_model
    from v2m.stages.evaluate.model_metrics import ModelEvalConfig, check_tokenizers, model_metrics
    from v2m.stages.session import check_kernel

    folder = Path(out_dir)
    targets = {row.name: folder / f"{row.name}.safetensors" for row in sweep.rows}
    for target in targets.values():
        artifacts.check_output(target, force, inputs=[model, corpus])
    data = read_corpus(corpus)
    meta = read_meta(model)
    check_tokenizers(meta, data, "model")
    if meta.get("quant"):
        raise V2MError(f"{model} is already quantized", "sweep the float model it was made from")
    for kernel in {row.kernel for row in sweep.rows}:
        check_kernel(kernel)
    scoring = choose_scoring(data, sweep.split, sweep.calib_split, sweep.holdout)
    log.info(f"sweep: {len(sweep.rows)} rows of {Path(model).name}, scored on {scoring.described}")
    folder.mkdir(parents=True, exist_ok=True)
    eval_config = ModelEvalConfig(context=sweep.context, max_tokens=sweep.max_tokens)
    reference = load_model(model)
    reference_size = Path(model).stat().st_size
    reference_metrics = model_metrics(reference, scoring.split, eval_config, reference_size, measure_speed=False)
    rows, failures = [], []
    for i, row in enumerate(sweep.rows, 1):
        started = time.perf_counter()
        if progress:
            progress(i - 1, len(sweep.rows), row.name)
        try:
            calibration = CalibrationSource(corpus, scoring.calib_split, row.calib_samples, row.calib_length,
                                            scoring.holdout)
            result = quantize_checkpoint(model, str(targets[row.name]), row.config, calibration, force=force)
            loaded = load_model(targets[row.name], kernel=row.kernel)
            metrics = model_metrics(loaded, scoring.split, eval_config, targets[row.name].stat().st_size,
                                    reference=reference, reference_size_bytes=reference_size, measure_speed=sweep.speed)
        except V2MError as e:
            failures.append({"name": row.name, "error": e.one_line()})
            log.warn(f"[{i}/{len(sweep.rows)}] {row.name}: {e.one_line()}")
            continue
        metrics["quantize_s"] = result.seconds
        gates = apply_gates(list(row.gates), metrics)
        kernels = sorted({layer.kernel_name for layer in loaded.model.modules() if hasattr(layer, "kernel_name")})
        rows.append({"name": row.name, "mode": "model", "files": [targets[row.name].name], "metrics": _clean(metrics),
                     "labels": {"scheme": row.config.scheme, "method": result.method, "kernel": ",".join(kernels),
                                "group": str(_group_label(loaded))},
                     "config": dataclasses.asdict(row.config), "gates": gates})
        verdict = "; ".join(("FAILED " if g["failed"] else "passed ") + g["gate"] for g in gates) or "no gates"
        log.info(f"[{i}/{len(sweep.rows)}] {row.name}: NLL Δ {100 * metrics['nll_delta']:+.2f} %, KL {metrics['kl']:.4f}, "
                 f"{metrics['size_ratio']:.3f}× the float file — {verdict} ({time.perf_counter() - started:.0f} s)")
    if progress:
        progress(len(sweep.rows), len(sweep.rows), "")
    gates = [dict(g, gate=f"{r['name']}: {g['gate']}") for r in rows for g in r["gates"]]
    payload = {"mode": "sweep", "metrics": _clean({k: reference_metrics[k] for k in ("nll", "ppl", "tokens_evaluated",
                                                                                         "context", "params", "size_mb")}),
               "labels": {"scored": scoring.described, "model": Path(model).name},
               "gates": gates, "rows": rows, "failures": failures}
    config = {**sweep.settings, "split": sweep.split, "rows": [r.name for r in sweep.rows]}
    sources = [artifacts.source_of(model, path=model), artifacts.source_of(Path(corpus) / "index.json",
                                                                           path=Path(corpus) / "index.json")]
    return artifacts.make_artifact("v2m.report", payload, stage="sweep", config=config, source=sources)


def _group_label(loaded) -> str:
    schemes = {layer.scheme.label() for layer in loaded.model.modules() if hasattr(layer, "scheme")}
    return ", ".join(sorted(schemes))


def _clean(metrics: dict) -> dict:
    from v2m.stages.evaluate.report import clean

    return clean(metrics)


def check_outcome(report: dict) -> None:
    """Exit 1 when a row could not be run (it outranks a failed gate), exit 3 when a gate failed."""
    from v2m.stages.evaluate.gates import raise_if_failed

    data = report["data"]
    if data["failures"]:
        names = "; ".join(f"{f['name']}: {f['error']}" for f in data["failures"])
        raise V2MError(f"{len(data['failures'])} of {len(data['failures']) + len(data['rows'])} rows failed ({names})",
                       "the report has the others")
    raise_if_failed(data["gates"])

"""What `v2m evaluate` is asked for, and the report it makes: a model on a corpus, a folder of outputs, or one
video's rhythm and its music — chosen by what is given (inputs recognised by content: evaluate/inputs.py).

`evaluate_request` returns the report (metrics, per-item rows and summary for folders, gate verdicts) and
`check_outcome` turns it into the exit status: a failed item is exit 1, a failed gate exit 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from v2m import artifacts, log
from v2m.errors import V2MError
from v2m.stages.evaluate.gates import apply_gates, parse_gates, raise_if_failed
from v2m.stages.evaluate.inputs import Input, evaluate_folder, evaluate_inputs, group_folder, load_input
from v2m.stages.evaluate.plot import plot_rhythm
from v2m.stages.evaluate.report import clean, reference_from_controls
from v2m.stages.evaluate.structure import corpus_range


@dataclass
class Report:
    """A v2m.report payload (`data`) with what the artifact's header records: the settings and the sources."""

    data: dict
    config: dict
    sources: list = field(default_factory=list)

    def artifact(self) -> dict:
        return artifacts.make_artifact("v2m.report", self.data, stage="evaluate", config=self.config,
                                       source=self.sources)


def evaluate_request(inputs: list[str], *, model: str | None = None, corpus: str | None = None, split: str = "test",
                     reference: str | None = None, max_tokens: int = 32768, context: int = 0, speed: bool = True,
                     device: str = "cpu", kernel: str = "auto", tokenizer: str | None = None, plot: str | None = None,
                     fail_if: str | None = None, progress: Callable | None = None,
                     diffusion: Callable | None = None) -> Report:
    """Evaluate what `inputs` and the options ask for (see the CLI's help); gates are parsed before any work."""
    gates = parse_gates(fail_if)  # a typo in a gate must not cost a model run
    config = {"split": split, "max_tokens": max_tokens, "context": context, "speed": speed, "device": device,
              "fail_if": fail_if}
    summary, rows, failures, labels, sources = None, None, [], {}, []
    if model is not None:
        if inputs:
            raise V2MError(f"model mode takes no other inputs (got {', '.join(inputs)})",
                           "evaluate the model and the music in two runs")
        if corpus is None:
            raise V2MError("--model needs --corpus: the token corpus to score it on", "e.g. --corpus corpus/ --split test")
        mode = "model"
        metrics, sources = evaluate_model(model, corpus, split, reference, max_tokens=max_tokens, context=context,
                                          speed=speed, device=device, kernel=kernel, diffusion=diffusion)
    elif corpus is not None or reference is not None:
        raise V2MError("--corpus and --reference measure a model", "add --model M.safetensors")
    elif not inputs:
        raise V2MError("nothing to evaluate", "see v2m evaluate --help")
    elif len(inputs) == 1 and Path(inputs[0]).is_dir() and not (Path(inputs[0]) / "index.json").is_file():
        if plot is not None:
            raise V2MError("--plot draws one video and one piece of music, not a folder", "evaluate one NAME to plot it")
        with log.progress("evaluate", total=len(group_folder(Path(inputs[0]))), unit="files") as advance:
            result = evaluate_folder(inputs[0], tokenizer, progress=progress or advance)
        mode, metrics = "folder", result["metrics"]
        summary, rows, failures = result["summary"], result["rows"], result["failures"]
        sources = [{"name": Path(inputs[0]).name, "files": sum(len(r["files"]) for r in rows)}]
    else:
        loaded = [load_input(path, tokenizer) for path in inputs]
        mode, metrics, labels = evaluate_inputs(loaded, tokenizer)
        sources = [item.source for item in loaded if item.source]
        if plot is not None:
            draw_plot(plot, loaded, metrics, mode)
    data = {"mode": mode, "metrics": clean(metrics), "labels": labels, "gates": apply_gates(gates, metrics, summary)}
    reference_range = corpus_range(metrics)
    if reference_range:  # the music's structure beside what real melodies do (BENCHMARKS.md, issue 17)
        data["corpus_range"] = reference_range
    if rows is not None:
        data.update({"rows": rows, "summary": {k: clean(v) for k, v in summary.items()}, "failures": failures})
    return Report(data, config, sources)


def check_outcome(report: Report) -> None:
    """Exit 1 when an item could not be scored (it outranks a failed gate), exit 3 when a gate failed."""
    data = report.data
    failures, results = data.get("failures") or [], data["gates"]
    if failures:
        names = "; ".join(f"{f['name']}: {f['error']}" for f in failures)
        gates_failed = [g["gate"] for g in results if g["failed"]]
        also = f"; gate(s) failed too: {', '.join(gates_failed)}" if gates_failed else ""
        raise V2MError(f"{len(failures)} of {len(failures) + len(data['rows'])} items failed ({names}){also}",
                       "the report has the others")
    raise_if_failed(results)


def evaluate_model(model: str, corpus: str, split: str, reference: str | None, *, max_tokens: int = 32768,
                   context: int = 0, speed: bool = True, device: str = "cpu", kernel: str = "auto",
                   diffusion: Callable | None = None) -> tuple[dict, list]:
    """Model mode: NLL/KL/size/speed of `model` on a corpus split (against `reference`), and the sources. A diffusion
    checkpoint goes to `diffusion` (v2m.stages.diffusion_eval.evaluate_diffusion: sampling needs stages.generate,
    which imports this package, so the caller hands it over)."""
    # imported here, not at the top: model mode needs torch (~1.3 s to import), scoring music needs none
    from v2m.checkpoint import read_meta
    from v2m.models.data import read_corpus
    from v2m.models.loading import load_model
    from v2m.stages.evaluate.model_metrics import ModelEvalConfig, check_tokenizers, model_metrics
    from v2m.stages.session import check_kernel

    if read_meta(model).get("backend") == "diffusion":
        if diffusion is None:
            raise V2MError(f"{model} is a diffusion checkpoint; this caller cannot sample it", "use v2m evaluate")
        return diffusion(model, corpus, reference, speed=speed, device=device, kernel=kernel)
    config = ModelEvalConfig(context=context, max_tokens=max_tokens, device=device)
    for path in (model, reference):
        if path is not None and read_meta(path).get("backend") == "diffusion":
            raise V2MError(f"{path}: a diffusion checkpoint; evaluate --model measures a token model's NLL on a corpus",
                           "score its music instead: v2m run (or generate + decode) and v2m evaluate the outputs")
    data = read_corpus(corpus)
    check_tokenizers(read_meta(model), data, "model")  # before the weights are read
    check_kernel(kernel)
    loaded = load_model(model, device=config.device, kernel=kernel)
    warn_if_calibrated_on(loaded.meta, corpus, split)
    ref = None
    if reference is not None:
        ref = load_model(reference, device=config.device)
        check_tokenizers(ref.meta, data, "reference model")
    log.info(f"scoring {model} on {corpus} ({split})" + (f" against {reference}" if reference else ""))
    metrics = model_metrics(loaded, data.load(split), config, Path(model).stat().st_size, reference=ref,
                            reference_size_bytes=Path(reference).stat().st_size if reference else None,
                            measure_speed=speed)
    index = Path(corpus) / "index.json"
    sources = [artifacts.source_of(model, path=model), artifacts.source_of(index, path=index)]
    if reference:
        sources.append(artifacts.source_of(reference, path=reference))
    return metrics, sources


def warn_if_calibrated_on(meta: dict, corpus: str, split: str) -> None:
    """A quantized model scored on the split it was calibrated on (its checkpoint records where: quant.calibration)
    would look better than it is: said on stderr, not silently (`v2m sweep` holds pieces out instead)."""
    calibration = (meta.get("quant") or {}).get("calibration") or {}
    if not calibration.get("corpus"):
        return
    same_corpus = Path(calibration["corpus"]).resolve() == Path(corpus).resolve()
    calib_split = str(calibration.get("split", ""))
    if same_corpus and (calib_split == split or calib_split.startswith(f"{split}-")):
        log.warn(f"the model was calibrated on {corpus} ({calib_split}): scoring the '{split}' split shares pieces "
                 "with its calibration (score another --split)")


def draw_plot(path: str, loaded: list[Input], metrics: dict, mode: str) -> None:
    """The --plot PNG: the video's envelope, beats and cuts above the music's onsets."""
    if mode != "rhythm":
        raise V2MError("--plot needs a video's rhythm next to the music", "pass RHYTHM.json MUSIC --plot out.png")
    by_kind = {item.kind: item for item in loaded}
    reference = by_kind["rhythm"].value if "rhythm" in by_kind else reference_from_controls(by_kind["controls"].value)
    plot_rhythm(path, reference, by_kind["music"].value, metrics, title=Path(by_kind["music"].path).name)
    log.info(f"plot written to {path}")

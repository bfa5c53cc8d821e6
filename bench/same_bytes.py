"""Same seed → same artifacts, across two commits: every stage run on both trees, every output hashed.

Why: a refactor (moving modules, untangling imports) must not change what v2m writes. This script lays out
each commit's tree as its own pyproject package map says (a folder `v2m/` of links: core/ → v2m, cli/ →
v2m/cli, ...), so two commits are importable side by side without installing either, then runs the same
commands with each (the `v2m` CLI through `python -c`), and compares the outputs byte for byte.

The commands cover every stage: extract-rhythm (video and audio), encode-tokens (rhythm → controls, MIDI →
tokens, a folder → corpus shards), generate (float and quantized, with --rerank and --prime), decode (MIDI,
WAV, muxed mp4), quantize (w8a8 RTN, w4 GPTQ), evaluate (rhythm, music, folder, model), train (debug preset,
a few CPU steps) and run. JSON artifacts are also compared without `created_by` (the header that records the
resolved config), so a change that is meant to be visible there — e.g. the kernel actually used instead of
"auto" — shows as "payload same" while the payload is still checked.

    python bench/same_bytes.py                 # HEAD~1 vs the working tree
    python bench/same_bytes.py --base 42e6376  # a given commit vs the working tree
    python bench/same_bytes.py --base A --head B

Exit 0 when every output's payload is identical, 1 otherwise. Wall-clock fields (seconds, tokens/s) are
dropped before comparing reports: they are measurements, not outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# keys whose values are timings (differ run to run on any commit)
VOLATILE = ("seconds", "wall", "wall_time", "tokens_per_s", "tok_per_s", "prefill_tps", "decode_tps", "_ms", "elapsed",
            "ratio_speed", "speedup")


def tree_at(rev: str | None, work: Path) -> Path:
    """A checkout of `rev` (None: the working tree as it is; a folder: a tree exported there, e.g. by `git archive`
    for a machine without the history) with a `v2m/` import layout next to it."""
    if rev is None:
        src = REPO
    elif Path(rev).is_dir():
        src = Path(rev).resolve()
    else:
        src = work / f"src-{rev}"
        if not src.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(src), rev],
                           check=True, capture_output=True)
    layout = work / f"layout-{Path(rev).name if rev else 'work'}"
    if layout.exists():
        shutil.rmtree(layout)
    pyproject = tomllib.loads((src / "pyproject.toml").read_text())
    package_dir = pyproject["tool"]["setuptools"]["package-dir"]
    # deepest package names last: v2m first, then v2m.cli, ... (a folder link inside the v2m/ folder)
    for name, folder in sorted(package_dir.items(), key=lambda kv: kv[0].count(".")):
        target = layout / Path(*name.split("."))
        if name.count(".") == 0:
            target.mkdir(parents=True)
            for item in (src / folder).iterdir():
                if item.name != "__pycache__":
                    (target / item.name).symlink_to(item)
        else:
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(src / folder)
    return layout


def search_path(layout: Path) -> str:
    """PYTHONPATH with `layout` first and the caller's path after it (carried packages on the GPU box live there)."""
    return os.pathsep.join(filter(None, [str(layout), os.environ.get("PYTHONPATH")]))


def run_v2m(layout: Path, args: list[str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": search_path(layout), "V2M_QUIET": "1", "PYTHONHASHSEED": "0"}
    code = "import sys; from v2m.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, input=stdin, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"v2m {' '.join(args)} failed in {layout.name} ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    return proc


def make_inputs(layout: Path, folder: Path) -> None:
    """The shared inputs, made once with one tree: a clip with cuts, click audio, sixteen MIDI files (a corpus with every split)."""
    env = {**os.environ, "PYTHONPATH": str(layout)}
    code = ("import sys; from v2m.samples import SampleSpec, write_video, write_onset_audio;"
            "write_video(sys.argv[1], SampleSpec(duration=10.0, width=320, height=180, cuts=2, bpm=112));"
            "write_onset_audio(sys.argv[2], bpm=96, duration=8.0)")
    subprocess.run([sys.executable, "-c", code, str(folder / "clip.mp4"), str(folder / "clicks.wav")], env=env,
                   check=True)
    import symusic  # a small two-part piece with a known grid, and its transposition

    for name, shift in [("song.mid", 0)] + [(f"piece{i:02d}.mid", i + 1) for i in range(15)]:
        score = symusic.Score(480)
        melody, bass = symusic.Track("melody", 0, False), symusic.Track("bass", 32, False)
        for bar in range(12):
            for beat in range(4):
                pitch = 60 + shift + [0, 4, 7, 12, 7, 4, 2, 5][(bar + beat) % 8]
                melody.notes.append(symusic.Note(bar * 1920 + beat * 480, 400, pitch, 90))
            bass.notes.append(symusic.Note(bar * 1920, 1800, 36 + shift + [0, 5, 7, 0][bar % 4], 80))
        score.tracks.extend([melody, bass])
        score.tempos.append(symusic.Tempo(0, 110.0))
        score.dump_midi(str(folder / "midis" / name))


def pipeline(layout: Path, inputs: Path, out: Path) -> None:
    """Every stage, as a user runs it, writing into `out`."""
    out.mkdir(parents=True)
    model = str(REPO / "presets" / "default.safetensors")

    def v2m(*args: str, stdin: bytes | None = None) -> bytes:
        return run_v2m(layout, list(args), out, stdin).stdout

    clip, clicks = str(inputs / "clip.mp4"), str(inputs / "clicks.wav")
    v2m("extract-rhythm", clip, "-o", "clip.rhythm.json")
    v2m("extract-rhythm", clicks, "-o", "clicks.rhythm.json")
    v2m("encode-tokens", "clip.rhythm.json", "-o", "clip.controls.json")
    v2m("encode-tokens", str(inputs / "midis" / "song.mid"), "-o", "song.tokens.json")
    v2m("encode-tokens", str(inputs / "midis"), "-o", "corpus/")
    v2m("generate", "clip.controls.json", "-o", "clip.tokens.json", "--seed", "3", "--device", "cpu")
    v2m("generate", "clip.rhythm.json", "-o", "rerank.tokens.json", "-n", "3", "--rerank", "--device", "cpu",
        "--style", "cinematic")
    v2m("generate", "clip.controls.json", "-o", "primed.tokens.json", "--prime", str(inputs / "midis" / "song.mid"),
        "--device", "cpu", "--seed", "1")
    piped = v2m("generate", "-", "--seed", "5", "--device", "cpu", stdin=(out / "clip.controls.json").read_bytes())
    (out / "piped.tokens.json").write_bytes(piped)
    v2m("decode", "clip.tokens.json", "-o", "clip.mid")
    v2m("decode", "clip.tokens.json", "-o", "clip.wav")
    v2m("decode", "clip.tokens.json", "-o", "clip.v2m.mp4", "--video", clip)
    v2m("quantize", model, "-o", "w8a8.safetensors", "--scheme", "w8a8")
    v2m("quantize", model, "-o", "w4.safetensors", "--scheme", "w4", "--group", "64", "--method", "gptq",
        "--calib", "corpus/", "--calib-samples", "4", "--calib-length", "64")
    for q in ("w8a8", "w4"):
        for kernel in ("auto", "reference"):
            v2m("generate", "clip.controls.json", "-o", f"{q}.{kernel}.tokens.json", "--model", f"{q}.safetensors",
                "--kernel", kernel, "--device", "cpu")
    v2m("evaluate", "clip.rhythm.json", "clip.mid", "-o", "eval.rhythm.json")
    v2m("evaluate", "clip.rhythm.json", "clip.wav", "-o", "eval.wav.json")
    v2m("evaluate", "clip.tokens.json", "-o", "eval.music.json")
    v2m("evaluate", "--model", "w8a8.safetensors", "--reference", model, "--corpus", "corpus/", "--split", "train",
        "--no-speed", "--max-tokens", "2048", "-o", "eval.model.json")
    v2m("train", "corpus/", "-o", "debug.safetensors", "--preset", "debug", "--steps", "6", "--device", "cpu")
    v2m("run", clip, "-o", "run/", "--device", "cpu")
    v2m("evaluate", "run/", "-o", "eval.folder.json")


def strip_volatile(obj):
    if isinstance(obj, dict) and str(obj.get("name")).endswith(("index.json", ".safetensors")) and "sha256" in obj:
        # a corpus index records its build's wall time, and older checkpoints' headers came in hash-map order:
        # their hashes are volatile (the files themselves are compared on their own)
        return {"name": obj["name"]}
    if isinstance(obj, dict):
        return {k: strip_volatile(v) for k, v in obj.items() if not any(tag in k for tag in VOLATILE)}
    if isinstance(obj, list):
        return [strip_volatile(v) for v in obj]
    return obj


def fingerprints(out: Path) -> dict[str, tuple[str, str]]:
    """relative path → (sha256 of the bytes, sha256 of the payload: JSON without created_by or timings)."""
    result = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = str(path.relative_to(out))
        data = path.read_bytes()
        whole = hashlib.sha256(data).hexdigest()
        payload = whole
        if data[:1] == b"{":
            obj = json.loads(data)
            if isinstance(obj, dict):
                obj.pop("created_by", None)
                payload = hashlib.sha256(json.dumps(strip_volatile(obj), sort_keys=True).encode()).hexdigest()
                whole = hashlib.sha256(json.dumps(strip_volatile(json.loads(data)), sort_keys=True).encode()).hexdigest()
        elif rel.endswith(".safetensors"):
            # the header's metadata table is a hash map in the safetensors writer: compare it sorted
            size = int.from_bytes(data[:8], "little")
            table = json.loads(data[8:8 + size])
            meta = table.get("__metadata__", {})
            for key, value in meta.items():  # JSON entries (train_state's clock, say) without their timings
                if value[:1] == "{":
                    meta[key] = strip_volatile(json.loads(value))
            header = json.dumps(table, sort_keys=True).encode()
            payload = hashlib.sha256(header + data[8 + size:]).hexdigest()
        result[rel] = (whole, payload)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD~1", help="the commit before the change")
    parser.add_argument("--head", default=None, help="the commit after (default: the working tree)")
    parser.add_argument("--keep", help="keep the outputs in this folder")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="v2m-same-bytes-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        base, head = tree_at(args.base, work), tree_at(args.head, work)
        inputs = work / "inputs"
        if inputs.exists():
            shutil.rmtree(inputs)
        (inputs / "midis").mkdir(parents=True)
        make_inputs(base, inputs)
        prints = {}
        for name, layout in (("base", base), ("head", head)):
            out = work / f"out-{name}"
            if out.exists():
                shutil.rmtree(out)
            pipeline(layout, inputs, out)
            prints[name] = fingerprints(out)
        names = sorted(set(prints["base"]) | set(prints["head"]))
        print(f"same bytes: {args.base} vs {args.head or 'working tree'} on {platform.node()} "
              f"({platform.machine()}, Python {platform.python_version()})")
        print(f"{'output':34} {'whole':>8} {'payload':>8}   (whole: all but timings; payload: without created_by)")
        bad = 0
        for n in names:
            b, h = prints["base"].get(n), prints["head"].get(n)
            if b is None or h is None:
                print(f"{n:34} {'only in ' + ('head' if b is None else 'base'):>17}")
                bad += 1
                continue
            whole, payload = ("same" if b[0] == h[0] else "DIFF"), ("same" if b[1] == h[1] else "DIFF")
            bad += payload != "same"
            print(f"{n:34} {whole:>8} {payload:>8}")
        print(f"{len(names)} outputs, {len(names) - bad} with the same payload, {bad} differ")
        return 1 if bad else 0
    finally:
        for rev in {args.base, args.head} - {None}:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(work / f"src-{rev}")],
                           capture_output=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""evaluate: how well the music fits the video, how good the music is, how good a model is; gates for CI.

Takes files recognised by content (inputs.py): a rhythm + music, music alone, a folder of `run` outputs, or a
model + a corpus; gives a v2m.report payload. modes.py is the entry (`evaluate_request`, `check_outcome`);
report.py rhythm agreement and music statistics on in-memory objects; beat_metrics.py, music_metrics.py,
structure.py (the melody's repeated and varied bars, motifs, density, breaths before phrases, and the corpus range
they are read against: presets/structure_range.json) and model_metrics.py the metrics themselves; gates.py
`--fail-if`; ci.py a sweep report as Markdown and JUnit XML; plot.py the PNG.
"""

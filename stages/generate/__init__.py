"""generate: controls (from a video) + a model → a piece of music as tokens, bar by bar on the video's grid.

Takes a v2m.controls (or v2m.rhythm) payload and an opened model (stages/session.py); gives a v2m.tokens
payload. artifact.py is the entry (`generate_file`, `generate_artifact`); plan.py what is forced (controls,
meter, the --prime theme), the style's melody settings and the mask of what is never sampled; motifs.py the
Conductor that follows the structure plan (restatements, breaths, cadences, the final chord); sampler.py the
decoding loop, sliding window and rerank.
"""

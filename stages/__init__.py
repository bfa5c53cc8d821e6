"""The stages: pure functions on in-memory objects, one sub-package (or module) per job, each with the entry
function its `v2m` subcommand calls. They use models, quant and core; never cli (docs/ARCHITECTURE.md).

    rhythm/    extract-rhythm   video or audio → v2m.rhythm (beats, downbeats, cuts, segments, envelope)
    tokens/    encode-tokens    MIDI → v2m.tokens; v2m.rhythm → v2m.controls; scores → a token corpus
    generate/  generate         v2m.controls (or v2m.rhythm) + a model → v2m.tokens
    arrange/   (generate, decode, run)  a melody → a multi-track piece on the video's grid, in a style
    decode/    decode           v2m.tokens → MIDI, WAV, or a video with the music under it
    evaluate/  evaluate         rhythm agreement, music statistics, model quality → v2m.report; CI gates
    run/       run              a video or a folder → every output above, resumable, in parallel
    quantize.py  quantize       a float checkpoint → a packed quantized one
    sweep.py     sweep          a sweep file's rows quantized and gated against the float model → v2m.report
    train.py     train          a corpus → a checkpoint
    session.py   (generate, evaluate, run)  a checkpoint opened with its vocabulary and decoders
"""

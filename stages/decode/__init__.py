"""decode: v2m.tokens → MIDI (symusic) → audio (FluidSynth + a General MIDI soundfont) → a video with that sound
(ffmpeg, the video stream copied).

Takes a tokens payload (and a video path to mux); gives files, each written atomically. render.py holds the
entry (`decode_file`) and the pieces `run` calls: `music_score`, `render_wav`, `mux`.
"""

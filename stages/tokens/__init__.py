"""encode-tokens: music and video rhythm on one scale of tokens, and the training corpus.

Takes MIDI (or any score music21/symusic read), a v2m.rhythm payload, or a folder of scores; gives v2m.tokens
ids, v2m.controls per bar, or corpus shards + index.json. encode.py is the entry; vocab.py the vocabulary
(MidiTok REMI + control tokens); convert.py MIDI ↔ ids; controls.py the per-bar controls computed from music,
video_controls.py the same controls from a rhythm; structure.py the plan of the music's form (sections, phrases,
motifs, cadences) the controls carry; beat_grid.py bars and beats ↔ seconds; corpus*.py and
humdrum.py the corpus builder and its readers.
"""

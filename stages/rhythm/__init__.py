"""extract-rhythm: a video (or audio) → a v2m.rhythm payload: motion onset envelope, tempo and confidence, beats,
downbeats and meter, scene cuts, per-segment affect.

Takes a media path (stream.py decodes it with ffmpeg at low resolution, in constant memory); gives a dict.
extract.py is the entry (`extract_rhythm`); motion.py the per-frame features (optical flow or frame
difference); tempo.py tempo, beats and meter from an envelope; audio.py onsets and beats of audio (librosa's
algorithms in numpy).
"""

"""arrange (used by generate, decode and run): a generated melody → a multi-track piece — harmony, bass, drums —
placed on the video's beat grid, in a style from presets/styles/.

Takes a symusic Score and the controls' grid; gives a Score. arranger.py is the entry; harmony.py keys and
chords; grooves.py drum patterns on a non-uniform grid; styles.py the style presets.
"""

"""What an artifact or a flag may ask of v2m: each bound is a clear refusal, never hours of work or gigabytes.

The schemas in v2m/schemas/ carry the same numbers (tests/core/test_schema.py checks they agree); docs/ARTIFACTS.md
("Limits") lists them with the reasons.
"""

MAX_DURATION = 10800.0     # s: three hours of video or audio in one artifact
MAX_METER = 16             # beats per bar
MAX_BEATS = 50_000         # tracked beats in a rhythm (three hours at 277 BPM)
MAX_GRID_BEATS = 50_000    # beats of the music's grid once continued from 0 s to the duration
MIN_BEAT_GAP = 0.05        # s between two tracked beats (1200 BPM): a grid continued at its step always progresses
MAX_BARS = 4096            # bars generate makes (--bars, a controls artifact): 2.3 hours in 4/4 at 120 BPM
MAX_TOKENS = 1 << 20       # ids in one token sequence (decode is linear in them: ~1 s per 10⁵)
MAX_SAMPLES = 64           # sequences in one tokens artifact (ids + samples)
MAX_BATCH = 64             # videos whose pieces `run --batch` decodes together
MAX_ARTIFACT_BYTES = 256 << 20  # a JSON artifact read into memory
MAX_MODEL_PARAMETERS = 4_000_000_000  # parameters a checkpoint's config may declare (16 GB in fp32)
MAX_CONTEXT = 1 << 17      # tokens of context (max_len) a checkpoint's config may declare

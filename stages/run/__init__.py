"""run: a video, or a folder of videos → for each, every stage's output and the muxed video, resumable after any
interruption, one bad video never stopping the others, each video made once however many processes share the
output folder.

Takes paths and a RunConfig; gives files per video and a result per video. batch.py is the entry (`run_config`,
`prepare` with `--shard`, `run_batch`); executors.py runs the videos (here, in worker processes) and on_ray.py on a
Ray cluster; video.py takes one video through all stages (`process`: resume, claim, isolation; its completion
marker); claims.py is the claim file per video (a lease, taken atomically, taken over only when stale).
"""

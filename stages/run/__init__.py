"""run: a video, or a folder of videos → for each, every stage's output and the muxed video, resumable after any
interruption, one bad video never stopping the others.

Takes paths and a RunConfig; gives files per video and a result per video. batch.py is the entry (`run_config`,
`prepare`, `run_batch`: in this process or in worker processes); video.py one video through all stages, its
completion marker and resume.
"""

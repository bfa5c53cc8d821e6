"""Work folders (a render's intermediate files) live beside the output and are swept when their process is gone."""

import os
import subprocess
import sys

from v2m.artifacts import WORK_PREFIX, sweep_work_folders, work_folder


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_process_work_folder_is_removed_by_the_next_one(tmp_path):
    left = tmp_path / f"{WORK_PREFIX}{dead_pid()}-abc"  # what `kill -9` during a render leaves
    (left / "raw.wav").parent.mkdir()
    (left / "raw.wav").write_bytes(b"x" * 1000)
    mine = tmp_path / f"{WORK_PREFIX}{os.getpid()}-def"  # a live process's folder is never touched
    mine.mkdir()
    other = tmp_path / "keep.wav"
    other.write_bytes(b"y")
    with work_folder(tmp_path) as work:
        assert work.parent == tmp_path and work.name.startswith(f"{WORK_PREFIX}{os.getpid()}-")
        (work / "in.mid").write_bytes(b"MThd")
        assert not left.exists() and mine.exists() and other.exists()
    assert not work.exists()
    assert sweep_work_folders(tmp_path) == 0 and mine.exists()


def test_the_work_folder_goes_on_an_exception(tmp_path):
    try:
        with work_folder(tmp_path) as work:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not work.exists() and list(tmp_path.iterdir()) == []

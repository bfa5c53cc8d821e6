"""Property: every artifact reader, fed a mutant of a valid artifact through the command line, either does its work
(exit 0, output written) or refuses in one `v2m: error:` line with exit 1 and writes nothing — never an internal
error, a traceback or a hang. Hypothesis draws the mutations (tests/fuzz.py); bench/fuzz_artifacts.py runs ≥ 10⁴ per
kind. Kept to a few seconds: a handful of examples per kind, each one in-process run of `v2m`."""

import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import KINDS, make_seeds, mutate, run_mutant


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seeds")
    return folder, make_seeds(folder)


@pytest.mark.parametrize("kind", KINDS)
def test_the_seed_itself_is_accepted(seeds, kind, tmp_path):
    import json

    folder, made = seeds
    if kind == "corpus":
        shutil.copytree(folder / "corpus", tmp_path, dirs_exist_ok=True)
    outcome = run_mutant(made[kind], json.dumps(made[kind].artifact).encode(), tmp_path)
    # a report is evaluate's output: read and checked, then refused as an input, in one line
    assert outcome.kind == ("refused" if kind == "report" else "accepted"), outcome.message


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# an integer seed, not st.randoms(): drawing floats, Hypothesis refuses to run in a process where a library built with
# -ffast-math has set flush-to-zero (the C kernels' tests load one into the same pytest worker)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), edits=st.integers(min_value=1, max_value=3))
def test_a_mutant_is_done_or_refused_in_one_line(seeds, kind, tmp_path_factory, seed, edits):
    folder, made = seeds
    rng = random.Random(seed)
    work = tmp_path_factory.mktemp(kind)
    if kind == "corpus":
        shutil.copytree(folder / "corpus", work, dirs_exist_ok=True)
    outcome = run_mutant(made[kind], mutate(made[kind].artifact, rng, edits), work, timeout=30)
    assert outcome.kind in ("accepted", "refused"), outcome.message
    if outcome.kind == "refused":
        assert "\n" not in outcome.message and outcome.message.startswith("v2m: error: ")

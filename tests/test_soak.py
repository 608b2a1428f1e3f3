"""A short soak in CI (``just soak`` runs the long one): nothing grows, nothing is lost.

The real service on its looped demo, plus two ``/v1/audio`` clients streaming
generated speech at real-time pace, two sessions each (a pass of two commands,
12.1 s of audio, then a new session); its RSS, threads, file descriptors and
trio tasks sampled throughout (issue 12, part 4). Beside them, for the first
20 s, hostile clients repeat every attack of issue 16
(``rtap_trio.bench.hostile``): each must be refused as documented while the
normal sessions lose nothing.

Why two passes of two commands, not 40 s of three-command passes: what finds a
leak is sessions that come and go and the counts once the load has gone, not
the minutes (trio's idle worker threads are waited out after the load, in the
soak's settle). A count of passes, not a time: beside three other busy runs, a
12.1 s pass took over 20 s, and a 20 s soak started two sessions, not four.
The load ends near 26 s; the attacks, 20 s, run two rounds (a round is at
least 10.3 s, so a third never starts, and its idle flood never falls in the
last third). 40 s of 19.5 s passes ran four or five sessions and ended
anywhere from 40 to 58 s. With one thread, one descriptor and one trio task
leaked per session ended (``SessionRegistry._release`` patched), the checks
against the first third let it through (four sessions: threads settled 9
against 7 + 2, fds 19 against 17 + 4; at 40 s, threads failed by one only
because that run had six sessions); the settled counts against those before
the clients start catch it (fds 15 -> 19, tasks 31 -> 35; without it,
15 -> 15 and 31 -> 30).
"""

from __future__ import annotations

import pytest

from rtap_trio.bench.common import fixture_clips
from rtap_trio.bench.hostile import ATTACKS
from rtap_trio.bench.soak import run_soak


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_short_hostile_soak_stays_flat_and_accounts_for_every_utterance() -> None:
    short = [c for c in fixture_clips() if c.has_speech and c.language == "en"]
    short = sorted(short, key=lambda clip: clip.duration_s)[:2]
    report = run_soak(short, seconds=20, clients=2, profile="pc2", hostile=True, passes=2)
    growth = report["growth"]
    print({key: value for key, value in report.items() if key != "samples"})
    assert report["exit_code"] == 0
    assert report["sessions"] == 4  # sessions came and went throughout
    assert report["utterances"] >= 8 and report["unaccounted"] == []
    assert report["frames_dropped"] == 0
    assert report["rss_growth"] <= report["rss_growth_limit"]
    hostile = report["hostile"]
    assert hostile["unexpected"] == []
    assert set(hostile["rounds"]) == set(ATTACKS) and min(hostile["rounds"].values()) >= 1
    # The service alone peaks near 200 MB on pc2; 300 MB is issue 16's bound for one client.
    assert report["peak_rss_mb"] < 200 + 300
    # Between the first and the last third: no thread, descriptor or task left
    # behind (a leaked one is there at every sample: the least of each third).
    floor = {key: (g["first_third_min"], g["last_third_min"]) for key, g in growth.items()}
    # Threads: once the load has gone and trio's idle workers have ended (while
    # it runs, how many are busy or cached follows the load, not a leak).
    assert report["settled"]["threads"] <= floor["threads"][0] + 2, (report["settled"], floor)
    assert floor["fds"][1] <= floor["fds"][0] + 4, floor
    assert floor["trio_tasks"][1] <= 1.25 * floor["trio_tasks"][0] + 5, floor
    # Descriptors and tasks once it has settled: as before the load (the demo
    # alone), give or take what the demo holds now and then. A descriptor or
    # task left behind by each session is here four times over.
    before, settled = report["before"], report["settled"]
    assert settled["fds"] <= before["fds"] + 2, (settled, before)
    assert settled["trio_tasks"] <= before["trio_tasks"] + 2, (settled, before)

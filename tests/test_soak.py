"""A short soak in CI (``just soak`` runs the long one): nothing grows, nothing is lost.

The real service on its looped demo, plus two ``/v1/audio`` clients streaming
generated speech at real-time pace and reconnecting after every pass, for
40 seconds; its RSS, threads, file descriptors and trio tasks sampled
throughout (issue 12, part 4). Beside them, the whole time, hostile clients
repeat every attack of issue 16 (``rtap_trio.bench.hostile``): each must be
refused as documented while the normal sessions lose nothing.
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
    short = sorted(short, key=lambda clip: clip.duration_s)[:3]
    report = run_soak(short, seconds=40, clients=2, profile="pc2", hostile=True)
    growth = report["growth"]
    print({key: value for key, value in report.items() if key != "samples"})
    assert report["exit_code"] == 0
    assert report["sessions"] >= 4  # sessions came and went throughout
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

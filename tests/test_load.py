"""20 jobs at once against 2 workers and 2 restore replicas, every server limited to one
stream: all complete with the right output, and no server ever runs more streams than its
limit (the extra callers get RESOURCE_EXHAUSTED and retry). Figures in bench.load."""

from __future__ import annotations

import json

import pytest

from bench.load import run_load

pytestmark = pytest.mark.e2e


def test_twenty_jobs_at_once(redis_url, tmp_path):
    report = run_load(redis_url, tmp_path, jobs=20, workers=2, replicas=2, max_streams=1,
                      queue="load-test")
    print(json.dumps(report.summary(), indent=2))  # the figures, in the test log
    assert report.failed == {}
    assert report.wrong_outputs == {}
    assert report.succeeded == 20
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 20
    assert not list((tmp_path / "out").glob(".*"))  # no partial files left anywhere
    assert max(report.max_streams_seen.values()) <= 1, report.max_streams_seen
    # the limit was met and handled: with a cold motion cache both workers' first jobs
    # call the single-stream motion server at once
    assert sum(report.resource_exhausted.values()) > 0, report.resource_exhausted

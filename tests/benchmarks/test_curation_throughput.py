"""benchmarks/curation_throughput.py tells where a curate's wall clock went from the times its
own log lines appeared (what is printed for issue 24's analysis)."""

from benchmarks.curation_throughput import Measured, _note_new_lines, phases


def test_lines_are_stamped_as_they_appear_and_a_partial_line_waits(tmp_path):
    log, stamped = tmp_path / "log.txt", []
    log.write_text("first\nsecond half")
    seen = _note_new_lines(log, 0, 1.0, stamped)
    log.write_text("first\nsecond half done\nthird\n")
    _note_new_lines(log, seen, 2.5, stamped)
    assert stamped == [(1.0, "first"), (2.5, "second half done"), (2.5, "third")]


def test_the_wall_clock_splits_into_start_up_units_merge_and_exit():
    m = Measured(wall_s=30.0, lines_at=[
        (3.0, "01:00:00 I pipelines.ray_local: starting a local Ray instance"),
        (9.0, "01:00:06 I pipelines.tracking: MLflow run abc in experiment 'tandem-curation'"),
        (20.0, "01:00:17 I pipelines.curate: [1/2 units, 1/2 sources] a.mp4: 3 clips kept, 0 rejected (4.0 s)"),
        (25.0, "01:00:22 I pipelines.curate: [2/2 units, 2/2 sources] b.mp4: 1 clips kept, 1 rejected (8.5 s)"),
        (26.0, "curated 2 inputs (2 unique) in 23.0s: 4 clips kept (10.0s of 12.0s footage)"),
    ])
    assert phases(m) == {"before Ray": 3.0, "Ray, Ray Data and worker start": 13.0, "units": 9.0,
                         "merge, report, MLflow": 1.0, "exit": 4.0}


def test_a_run_without_those_lines_has_no_phases():
    assert phases(Measured(wall_s=2.0, lines_at=[(1.0, "nothing to do")])) is None

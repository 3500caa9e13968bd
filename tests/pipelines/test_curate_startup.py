"""A curation run's start-up: the MLflow run opens while Ray starts, not after it."""

import threading

import pytest

from pipelines.curate import _open_beside


class Run:
    def __init__(self):
        self.exited_with = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.exited_with = exc


def test_the_run_opens_while_ray_starts():
    ray_starting, run = threading.Event(), Run()

    def open_run():  # finishes only once Ray's start-up is under way: they overlap
        assert ray_starting.wait(timeout=10), "the run was opened only after Ray had started"
        return run

    assert _open_beside(open_run, ray_starting.set) is run


def test_a_ray_that_fails_to_start_ends_the_opened_run_with_its_error():
    run, boom = Run(), ConnectionError("no cluster")

    def start_ray():
        raise boom

    with pytest.raises(ConnectionError):
        _open_beside(lambda: run, start_ray)
    assert run.exited_with is boom


def test_without_ray_to_start_the_run_just_opens():
    run = Run()
    assert _open_beside(lambda: run, None) is run and run.exited_with is None

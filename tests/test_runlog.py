"""A run's logs/ folder: ripple's records and the Ray driver's go to the file, Ray's console handler is quieted,
a failure's traceback is kept in the file only, and a run on S3 gets its log uploaded."""
from __future__ import annotations

import logging

import pytest
import ray  # noqa: F401  (installs Ray's handlers on the "ray" logger, as a run does)

from ripple.data.storage import StorageOptions, Store
from ripple.runlog import RunLogs, copy_tree


def _ray_console_handlers():
    return [h for h in logging.getLogger("ray").handlers if isinstance(h, logging.StreamHandler)
            and not isinstance(h, logging.FileHandler)]


def test_records_go_to_the_file_and_ray_is_quiet_on_the_console(tmp_path):
    before = [(h, h.level) for h in _ray_console_handlers()]
    assert before, "Ray installs a console handler on import"
    with RunLogs(str(tmp_path / "run")):
        logging.getLogger("ripple.test").info("a ripple record")
        logging.getLogger("ray.test").info("a Ray record")
        assert all(h.level >= logging.ERROR for h in _ray_console_handlers())
    text = (tmp_path / "run" / "logs" / "ripple.log").read_text()
    assert "INFO ripple.test: a ripple record" in text and "INFO ray.test: a Ray record" in text
    assert [(h, h.level) for h in _ray_console_handlers()] == before  # restored on leaving
    with RunLogs(str(tmp_path / "run"), verbose=True):  # -v: Ray's console handler as it was
        assert [(h, h.level) for h in _ray_console_handlers()] == before


def test_a_failure_leaves_its_traceback_in_the_file(tmp_path, capfd):
    with pytest.raises(ZeroDivisionError):
        with RunLogs(str(tmp_path / "run")):
            1 / 0
    text = (tmp_path / "run" / "logs" / "ripple.log").read_text()
    assert "the run failed" in text and "ZeroDivisionError" in text and "Traceback" in text
    assert "Traceback" not in capfd.readouterr().err


def test_a_run_on_s3_gets_its_log_and_copied_trees(s3_server, s3_bucket, tmp_path):
    options = StorageOptions(endpoint_url=s3_server)
    run = f"{s3_bucket}/runs/r1"
    with RunLogs(run, options):
        logging.getLogger("ripple.test").info("on s3")
    store = Store(run, options)
    assert b"on s3" in store.read_bytes("logs", "ripple.log")
    (tmp_path / "session" / "sub").mkdir(parents=True)
    (tmp_path / "session" / "worker-1.out").write_text("worker output")
    (tmp_path / "session" / "sub" / "raylet.out").write_text("raylet")
    (tmp_path / "session" / "node.sock").write_text("")  # not a log
    assert copy_tree(str(tmp_path / "session"), store, "logs", "ray") == 2
    assert store.read_bytes("logs", "ray", "sub", "raylet.out") == b"raylet"

"""Fixtures of the launch tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def no_ray(monkeypatch):
    """Bad input must be refused before Ray: fail loudly (without starting it) if the pipeline gets that far."""
    from ripple.launch import pipeline

    def refuse(*a, **kw):
        pytest.fail("the pipeline went past validation: it would start Ray")

    monkeypatch.setattr(pipeline, "init_ray", refuse)
    monkeypatch.setattr(pipeline, "fit", refuse)

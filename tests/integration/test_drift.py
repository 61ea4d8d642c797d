"""The drift scenario of `raylife bench` at its small size: a model trained on small diamonds,
served with capture on, quiet on held-out small diamonds and alarmed by large ones."""

from __future__ import annotations

import pytest

from raylife.settings import Settings


@pytest.mark.slow
def test_monitor_finds_the_shift_and_stays_quiet_without_it(tmp_path, monkeypatch):
    from raylife_dev.bench import drift_bench

    monkeypatch.setenv("RAYLIFE_MLFLOW_URI", "off")
    settings = Settings.from_env(home=str(tmp_path), store=str(tmp_path / "store"))
    section = drift_bench.run(settings, quick=True)
    setup = drift_bench.setup_for(True)
    assert section.extra["control windows"] == setup.control_windows
    assert section.extra["requests"] == setup.window_requests * (
        setup.control_windows + setup.shifted_windows
    )
    assert "carat" in section.extra["first shifted alarm"]
    failed = [c.to_dict() for c in section.checks if not c.met]
    assert not failed, failed

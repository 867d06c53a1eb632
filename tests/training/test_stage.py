import json

import pytest
import torch

from vp.training.stage import Schedule, Stage, read_log


def _run(work, stop_at=None):
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 2)
    stage = Stage("toy", module, Schedule(steps=6, lr=0.1, warmup=2), work, checkpoint_every=3)

    def step_fn(step):
        if step == stop_at:
            raise KeyboardInterrupt
        g = torch.Generator().manual_seed(step)  # the batch depends on the step only
        x = torch.randn(8, 4, generator=g)
        return {"loss": (module(x) - x[:, :2]).pow(2).mean()}

    stage.train(step_fn)
    return module


def test_a_resumed_stage_ends_where_an_uninterrupted_one_does(tmp_path):
    whole = _run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", stop_at=4)  # killed after the step-3 checkpoint
    assert json.loads((tmp_path / "b" / "toy" / "checkpoint.json").read_text())["step"] == 3
    resumed = _run(tmp_path / "b")
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    log = read_log(tmp_path / "b" / "toy")
    assert [r["step"] for r in log] == list(range(6))
    assert log[-1]["loss"] < log[0]["loss"]


def test_schedule_warms_up_then_decays():
    s = Schedule(steps=100, lr=1.0, warmup=10, final_fraction=0.1)
    assert s.at(0) == pytest.approx(0.1) and s.at(9) == pytest.approx(1.0)
    assert s.at(10) == pytest.approx(1.0) and s.at(100) == pytest.approx(0.1)
    assert all(s.at(i) >= s.at(i + 1) for i in range(10, 100))


def test_schedule_restarts_each_cycle_at_a_lower_peak():
    one = Schedule(steps=100, lr=1.0, warmup=10)
    two = Schedule(steps=200, lr=1.0, warmup=10, cycles=2, restart_decay=0.5)
    assert [two.at(i) for i in range(100)] == [one.at(i) for i in range(100)]  # a run extended by a cycle
    assert [two.at(100 + i) for i in range(100)] == pytest.approx([0.5 * one.at(i) for i in range(100)])

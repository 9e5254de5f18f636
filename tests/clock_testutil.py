"""A fake clock for the throughput tests: a chosen function of a recipe module costs 1000 s."""

from typing import Any


def make_slow(monkeypatch: Any, module: Any, name: str, seconds: float = 1000.0) -> None:
    """Each call of `module.<name>` moves `module.time.perf_counter` on by `seconds`."""
    offset = [0.0]
    real_clock, real_fn = module.time.perf_counter, getattr(module, name)

    def slow(*args: Any, **kwargs: Any) -> Any:
        offset[0] += seconds
        return real_fn(*args, **kwargs)

    monkeypatch.setattr(module, "time", type("FakeTime", (), {"perf_counter": staticmethod(
        lambda: real_clock() + offset[0])}))
    monkeypatch.setattr(module, name, slow)

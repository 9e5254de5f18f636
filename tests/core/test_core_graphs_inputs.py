"""GraphedStep's input checks (CPU: the checks run before any replay; capture itself is GPU-tested)."""

import pytest
import torch

from sparse_core.graphs import GraphedStep


def _step_with(static_inputs: tuple) -> GraphedStep:
    step = GraphedStep.__new__(GraphedStep)  # no capture: only the static inputs matter here
    step.static_inputs = static_inputs
    return step


def test_tensor_inputs_are_copied_and_non_tensor_inputs_must_not_change():
    x = torch.zeros(2, 3)
    step = _step_with((x, 5.0, "mean"))
    step._copy_inputs((torch.ones(2, 3), 5.0, "mean"))
    assert torch.equal(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"graph input 1 was 5.0 at capture and is part of the graph; got 1.0"):
        step._copy_inputs((torch.ones(2, 3), 1.0, "mean"))
    with pytest.raises(ValueError, match=r"graph input 0 has the static shape \(2, 3\), got \(3, 2\)"):
        step._copy_inputs((torch.ones(3, 2), 5.0, "mean"))
    with pytest.raises(ValueError, match=r"graph input 0 has the static shape \(2, 3\), got 7"):
        step._copy_inputs((7, 5.0, "mean"))
    with pytest.raises(ValueError, match="expected 3 inputs, got 2"):
        step._copy_inputs((torch.ones(2, 3), 5.0))


def test_unchanged_constants_pass_and_tensors_inside_containers_must_be_the_same_objects():
    t = torch.ones(2)
    step = _step_with((float("nan"), [t, 3], (1, "a")))
    step._copy_inputs((float("nan"), [t, 3], (1, "a")))  # NaN is unchanged; the very same tensor in the list
    with pytest.raises(ValueError, match="graph input 1 was"):
        step._copy_inputs((float("nan"), [torch.ones(2), 3], (1, "a")))  # a new tensor there would be ignored
    with pytest.raises(ValueError, match="graph input 2 was"):
        step._copy_inputs((float("nan"), [t, 3], (1, "b")))
    in_dict = _step_with(({"s": t, "w": float("nan")},))
    in_dict._copy_inputs(({"s": t, "w": float("nan")},))
    with pytest.raises(ValueError, match="graph input 0 was"):
        in_dict._copy_inputs(({"s": torch.ones(2), "w": float("nan")},))

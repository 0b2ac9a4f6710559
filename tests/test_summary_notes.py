"""Notes ``train`` prints before its first step about the schedule (a new user's ``cpu`` run on 43
training cases took 48 optimiser steps and predicted every class near its base rate)."""
from raddiag.config import preset
from raddiag.training.summary import FEW_STEPS, _few_steps


def test_a_run_of_few_optimiser_steps_is_noted_with_the_epochs_that_reach_enough():
    tc = preset("cpu").train                         # 8 epochs
    note = _few_steps(tc, batches_per_epoch=6)       # 48 steps, as the new user's run
    assert note is not None and "48 optimiser steps" in note
    epochs = int(note.split("train.epochs=")[1].split()[0])
    assert epochs * 6 >= FEW_STEPS and (epochs - 1) * 6 < FEW_STEPS


def test_the_demo_schedule_and_accumulated_steps_are_counted_as_steps():
    tc = preset("cpu").train
    assert _few_steps(tc, batches_per_epoch=16) is None          # the demo: 128 steps
    tc.grad_accum = 4                                            # 16 batches -> 4 steps an epoch: 32 in all
    assert "32 optimiser steps" in _few_steps(tc, batches_per_epoch=16)


def test_a_gpu_recipe_on_a_cpu_is_noted_and_a_cpu_recipe_or_a_gpu_is_not():
    """New user: `train` without --preset is `paper` (256 px x 32, ResNet-50) and said nothing on a
    CPU, where a step takes minutes."""
    from raddiag.training.summary import _gpu_recipe_on_cpu

    note = _gpu_recipe_on_cpu(preset("paper"), "cpu")
    assert "paper preset is made for a GPU (256 px x 32 slices)" in note and "--preset cpu" in note
    assert _gpu_recipe_on_cpu(preset("official"), "cpu") is not None
    assert _gpu_recipe_on_cpu(preset("cpu"), "cpu") is None and _gpu_recipe_on_cpu(preset("tiny"), "cpu") is None
    assert _gpu_recipe_on_cpu(preset("paper"), "cuda:0") is None

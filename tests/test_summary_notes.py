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

"""The batched serving step: slot state on the device, one step for every slot of a model.

`table.py` holds the per-slot state and K/V slabs, `sampling.py` and `noise.py` choose tokens for
all rows in one batched operation, `body.py` is the step itself (run eagerly on CPU, replayed
from CUDA graphs by `graphs.py`) over the layers of `layers.py` / `predictor.py` and the
matrix multiplies of `linear.py` / `quant.py`, `stepper.py` is the `StepEngine` the loop drives,
and `reference.py` the teacher-forced stock logits it is checked against.
"""

"""The batched serving step: slot state on the device, one step for every slot of a model.

`table.py` holds the per-slot state and K/V slabs, `sampling.py` and `noise.py` choose tokens for
all rows in one batched operation, `body.py` is the step itself (run eagerly on CPU, replayed
from CUDA graphs by `graphs.py`), and `stepper.py` is the `StepEngine` the loop drives.
"""

"""The serving step is device-correct and sync-free, checked on a CPU-only machine.

A GPU is not here, so the step body runs on fake accelerator tensors (`FakeTensorMode`: every
weight, buffer and slot-table tensor is a fake tensor with no storage on a device that is not the
CPU). There, mixing in a CPU tensor raises (the error that stopped the server on its first GPU
run), and so does any data-dependent host read (`int()`, `bool()`, `.item()` on a tensor):
exactly the two things a CUDA-graph-captured step must not do. The fake device is "meta", not
"cuda": a CPU-only torch build cannot even slice a fake cuda tensor (it asks the CUDA runtime
for a device guard), while fake meta tensors behave like any non-CPU device for both checks.
A static audit of the step's source backs it up for what fake tensors cannot see (a factory
without `device=` that happens to run on CPU data), and an op counter shows the step does the
same work whatever the number of rows.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from qwen3_tts_server.engine.base import SynthItem
from qwen3_tts_server.engine.model.qwen import QwenEngine
from qwen3_tts_server.engine.step import body, layers, noise, predictor, prefill, sampling
from qwen3_tts_server.engine.step.linear import CudaLinear
from qwen3_tts_server.engine.step.stepper import Lane, StepEngine
from qwen3_tts_server.values import Sampling

SYNCS = {"aten::_local_scalar_dense", "aten::item"}
#: The stand-in for the GPU (see the module docstring).
FAKE = "meta"


def _fake(tensor: torch.Tensor) -> torch.Tensor:
    return torch.empty(tensor.shape, dtype=tensor.dtype, device=FAKE)


def _to_fake(value: Any, seen: set[int]) -> Any:
    """`value` with every tensor inside it (module parameters and buffers, tensors held by the
    lane, its layers, linears and slot table, in lists, tuples and dicts) replaced by a fake
    tensor of its shape on the FAKE device. Modules and the project's objects change in place."""
    if isinstance(value, torch.nn.Parameter):
        return torch.nn.Parameter(_fake(value), requires_grad=False)
    if isinstance(value, torch.Tensor):
        return _fake(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_fake(item, seen) for item in value)
    if isinstance(value, dict):
        return {key: _to_fake(item, seen) for key, item in value.items()}
    ours = type(value).__module__.startswith("qwen3_tts_server")
    if id(value) in seen or not (ours or isinstance(value, torch.nn.Module)):
        return value
    seen.add(id(value))
    for name, item in list(vars(value).items()):  # a module's parameters, buffers, children
        setattr(value, name, _to_fake(item, seen))
    return value


@pytest.fixture
def fake_lane(tiny_models_dir: Path) -> Iterator[Lane]:
    """A lane built on the CPU (stock's rotary module cannot run on a fake device: it opens an
    autocast context for the tensor's device type), then moved wholesale to fake tensors."""
    model = QwenEngine.load(tiny_models_dir / "base", device="cpu").model("base")
    lane = Lane("base", model, CudaLinear, rows=4, context=64)  # CUDA's linears: fused
    assert lane.talker_layers[0].qkv is not None
    with FakeTensorMode(allow_non_fake_inputs=False):
        yield _to_fake(lane, set())


@pytest.mark.parametrize("rows", [1, 3])
def test_the_step_runs_on_fake_accelerator_tensors(fake_lane: Lane, rows: int) -> None:
    table = fake_lane.table
    assert table.kv[0][0].device.type == FAKE and fake_lane.rope_cos.device.type == FAKE
    logits = torch.empty(1, table.vocab, device=FAKE)
    body.first_token(table, 0, logits)
    body.step_rows(fake_lane, table, rows, 16)
    assert table.out.device.type == FAKE


@pytest.mark.parametrize("rows", [1, 3])
def test_the_prefill_runs_on_fake_accelerator_tensors(fake_lane: Lane, rows: int) -> None:
    """Prompts of different lengths into any rows: what admission runs before a row's steps."""
    table = fake_lane.table
    width = table.hidden.shape[1]
    prompts = [
        torch.empty(1, 5 + 2 * i, width, dtype=fake_lane.dtype, device=FAKE) for i in range(rows)
    ]
    index = torch.empty(rows, dtype=torch.int64, device=FAKE)  # no values: fake
    lengths = torch.empty(rows, dtype=torch.int64, device=FAKE)
    logits = prefill.prefill_rows(fake_lane, table, index, prompts, lengths)
    assert logits.device.type == FAKE and logits.shape == (rows, table.vocab)


def test_fake_tensors_catch_a_cpu_tensor_and_a_host_read(fake_lane: Lane) -> None:
    """The guard itself: what broke the first GPU run fails here too."""
    table = fake_lane.table
    with pytest.raises(RuntimeError, match="same device"):
        torch.isin(table.token[:1], torch.tensor([1, 2]))
    with pytest.raises(DataDependentOutputException):
        int(table.count[0])


#: The step's code: whole modules, and the step functions of shared modules.
AUDITED: list[Any] = [
    body,
    sampling,
    noise,
    prefill,
    predictor.predictor_logits,
    layers.DecoderLayer.qkv_heads,
    layers.DecoderLayer.finish,
    layers.DecoderLayer.step_rows,
    layers.DecoderLayer.step_shared,
    layers.DecoderLayer.prefill,
    layers.apply_rope,
    layers.rotate_half,
]
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "tensor", "rand", "randn", "randint"}
HOST_READS = {"item", "tolist", "cpu", "numpy"}
ALLOW = "# audit: allowed"


def audit(source: str) -> list[str]:
    """Host reads and device-less tensor factories in `source` (lines marked ALLOW pass)."""
    lines = source.splitlines()
    findings = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or ALLOW in lines[node.lineno - 1]:
            continue
        func = node.func
        where = f"line {node.lineno}: {lines[node.lineno - 1].strip()}"
        literal = all(isinstance(arg, ast.Constant) for arg in node.args)
        if isinstance(func, ast.Name) and func.id in {"int", "bool", "float"} and not literal:
            findings.append(f"{func.id}() reads a value on the host, {where}")
        if isinstance(func, ast.Attribute):
            if func.attr in HOST_READS:
                findings.append(f".{func.attr}() reads a tensor on the host, {where}")
            keywords = {k.arg for k in node.keywords}
            if (
                isinstance(func.value, ast.Name)
                and func.value.id == "torch"
                and func.attr in FACTORIES
                and "device" not in keywords
            ):
                findings.append(f"torch.{func.attr} without device=, {where}")
            if func.attr == "Generator":
                findings.append(f"a generator in the step, {where}")
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            if isinstance(arg, ast.Constant) and arg.value == "cpu":
                findings.append(f'a "cpu" literal, {where}')
    return findings


def test_the_step_code_has_no_host_read_and_no_device_less_factory() -> None:
    findings = {
        getattr(item, "__qualname__", item.__name__): audit(
            textwrap.dedent(inspect.getsource(item))
        )
        for item in AUDITED
    }
    assert {name: found for name, found in findings.items() if found} == {}


def test_the_audit_finds_what_it_looks_for() -> None:
    bad = 'x = int(t)\ny = t.item()\nz = torch.zeros(3)\nw = t.to("cpu")\n'
    assert len(audit(bad)) == 4
    assert audit('ok = torch.ones(2, device=d)\ninf = float("-inf")\n') == []
    assert audit("x = int(t)  # audit: allowed\n") == []


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


def _count_step(engine: StepEngine, item: SynthItem, rows: int) -> Counter[str]:
    slots = [engine.admit(item, Sampling(), 8) for _ in range(rows)]
    engine.step(slots)  # the first step may take one-time paths
    with _OpCounter() as counter:
        engine.step(slots)
    for slot in slots:
        engine.release(slot)
    return counter.ops


def test_a_step_costs_the_same_ops_at_16_rows_as_at_1(
    stock: QwenEngine, voice_prompts: dict[str, bytes]
) -> None:
    engine = StepEngine(stock, rows=16)
    item = SynthItem("Counting the operations of a step.", "english", voice_prompts["xvec"])
    one, sixteen = _count_step(engine, item, 1), _count_step(engine, item, 16)
    print(f"ops per step: {sum(one.values())} at 1 row, {sum(sixteen.values())} at 16 rows")
    assert sum(sixteen.values()) <= 1.5 * sum(one.values())
    assert sum(one[op] for op in SYNCS) == 0 and sum(sixteen[op] for op in SYNCS) == 0

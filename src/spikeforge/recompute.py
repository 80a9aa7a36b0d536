"""The ``memory`` config group: activation recomputation (gradient checkpointing) for BPTT.

BPTT keeps every layer's activations of all T steps for backward, so its memory grows with T.
``memory=checkpoint`` keeps only the input of each *unit* and recomputes the unit's forward in
backward (Chen et al. 2016, "Training deep nets with sublinear memory cost"; for SNNs over layers
and time, spikingjelly 2.0's ``activation_based.memopt``). Units, found in every ``nn.Sequential``
of the network (stages, feature stacks) without changing the module tree or the state-dict keys:

- a child that contains neurons but is not one (a residual block) is one unit;
- consecutive plain layers form one unit that ends after each neuron (conv → norm → neuron).

The recompute is exact, one unit over all T at once (no chunking over T, which would split
BatchNorm's batch statistics over time):

- neuron state: the recompute starts from the state the unit's forward started from (saved at
  forward time, spikingjelly ``extract_memories``) and the state after it is left as it was;
- buffers (BatchNorm running statistics) are restored after the recompute: counted once;
- random draws: torch's checkpoint replays the global CPU/CUDA streams; the private
  ``torch.Generator`` of a layer (ASGL's per-rank mask stream) is set back to its state at the
  forward before the recompute and put back afterwards, so the masks are identical and drawn once;
- autocast (AMP) is replayed by torch's checkpoint.

A unit's input is stored bit-packed (spikingjelly ``BitSpikeCompressor``, 1 bit per element) only
where it is *provably* binary: the unit directly follows, in its ``nn.Sequential``, a neuron whose
forward is a Heaviside step (``lif``, ``if``, ``stbp_lif``, ``sltt_lif``). A residual block's input
(the real-valued residual stream), ASGL's hybrid output and DSR's {0, V_th} spikes are never packed
(packing them silently corrupts the step); the first packed call of every unit checks it.

``memory=auto`` lets spikingjelly's ``memopt.optimize_memory`` choose which units to checkpoint on
the first training batch (a probe of each unit's input size; on CUDA, level 4 also measures peaks and
unwraps units that do not pay) and then runs the chosen units through the same exact recompute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial
from typing import Any

import torch
from spikingjelly.activation_based import base
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.memopt import BitSpikeCompressor, optimize_memory
from torch import nn
from torch.utils.checkpoint import checkpoint

from spikeforge.errors import ConfigError
from spikeforge.neurons import is_neuron

MODES = ("none", "checkpoint", "auto")
BUDGETS = ("speed", "balanced", "memory")  # memopt level 1: ~50 / 75 / 100 % of the units
_BITS = BitSpikeCompressor()


# ---- which inputs are provably binary ---------------------------------------------------------
def heaviside_output(m: nn.Module) -> bool:
    """True when ``m`` is a neuron whose output is exactly 0 or 1 (a Heaviside step of the membrane)."""
    from spikeforge.neurons.stbp import STBPLIFNode

    if isinstance(m, STBPLIFNode):
        return True
    if isinstance(m, sj_neuron.BaseNode):  # lif, if, sltt_lif: spike = Θ(v − V_th)
        return bool(getattr(m.surrogate_function, "spiking", True))
    return False


def _in_neuron_slot(m: nn.Module) -> bool:
    """A spiking neuron, or the ReLU that takes a neuron's slot in the ANN of the same graph."""
    from spikeforge.neurons.basic import ReLUNeuron

    return is_neuron(m) or isinstance(m, ReLUNeuron)


def _has_neuron(m: nn.Module) -> bool:
    return any(_in_neuron_slot(x) for x in m.modules())


# ---- a unit and its exact recompute ------------------------------------------------------------
class _ZeroToken(torch.autograd.Function):
    """Zeros shaped like ``x`` (one stored element) whose gradient flows to ``x``: carries the gradient
    of a unit's bit-packed input back to the live tensor."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.new_zeros(()).expand_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class _Hold(torch.autograd.Function):
    """Identity on a unit's output that saves what the checkpoint keeps of its input (the input, or its
    bits): held until backward either way, now also seen by saved-tensor hooks (the bytes-saved figure)."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, *held: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(*held)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        return (grad, *([None] * len(ctx.saved_tensors)))


class _Recompute:
    """Context of a unit's recompute in backward (``torch.utils.checkpoint``'s ``context_fn``): made
    at the unit's forward, it records what the forward started from; entered in backward it replays
    that and afterwards restores what the forward left."""

    def __init__(self, body: nn.ModuleList) -> None:
        self.body = body
        self.gens = _generators(body)
        self.gen_states = [g.get_state() for g in self.gens]
        self.memories = [_clone(v) for v in base.extract_memories(body)]

    def __enter__(self) -> None:
        self.after_gens = [g.get_state() for g in self.gens]
        for g, s in zip(self.gens, self.gen_states, strict=True):
            g.set_state(s)
        self.after_memories = base.extract_memories(self.body)
        base.load_memories(self.body, [_clone(v) for v in self.memories])
        self.buffers = [(b, b.detach().clone()) for b in self.body.buffers()]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for b, saved in self.buffers:
                b.copy_(saved)
        base.load_memories(self.body, self.after_memories)
        for g, s in zip(self.gens, self.after_gens, strict=True):
            g.set_state(s)
        self.buffers = []


def _clone(v: Any) -> Any:
    return v.detach().clone() if isinstance(v, torch.Tensor) else v


def _generators(body: nn.Module) -> list[torch.Generator]:
    """Private generators of the unit's layers (e.g. ASGL's ``HybridSpike.generator``), each once."""
    seen: dict[int, torch.Generator] = {}
    for m in body.modules():
        for v in vars(m).values():
            if isinstance(v, torch.Generator):
                seen.setdefault(id(v), v)
    return list(seen.values())


def _contexts(body: nn.ModuleList) -> tuple[contextlib.nullcontext[None], _Recompute]:
    return contextlib.nullcontext(), _Recompute(body)


class Unit(nn.Module):
    """Consecutive layers of one ``nn.Sequential`` run as one recomputed unit. It is kept outside the
    network's module tree (the Sequential holds it as a plain attribute), so names and state-dict keys
    are those of the network without it."""

    def __init__(self, layers: list[nn.Module], binary_input: bool, name: str) -> None:
        super().__init__()
        self.body = nn.ModuleList(layers)
        self.binary_input = binary_input
        self.unit_name = name
        self.checkpointed = any(True for _ in self.body.parameters()) or _has_neuron(self.body)
        self.verified = False

    def run(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.body:
            x = m(x)
        return x

    def _run_packed(self, packed: tuple[torch.Tensor, torch.dtype, torch.Size], token: torch.Tensor) -> torch.Tensor:
        restored = _BITS.decompress(packed)
        return self.run(token + (restored - token).detach())  # value: the spikes; gradient: to the input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.checkpointed and torch.is_grad_enabled()):
            return self.run(x)
        ctx = partial(_contexts, self.body)
        if not self.binary_input:
            return _Hold.apply(checkpoint(self.run, x, use_reentrant=False, context_fn=ctx), x.detach())
        if not self.verified:  # the structural proof, checked once
            if not bool(((x == 0) | (x == 1)).all()):
                raise RuntimeError(f"memory=checkpoint: the input of {self.unit_name} follows a spiking neuron but "
                                   "is not binary; it cannot be bit-packed")
            self.verified = True
        with torch.no_grad():
            packed = _BITS.compress(x)
        out = checkpoint(self._run_packed, packed, _ZeroToken.apply(x), use_reentrant=False, context_fn=ctx)
        return _Hold.apply(out, packed[0])

    def extra_repr(self) -> str:
        return f"{self.unit_name}, checkpointed={self.checkpointed}, bit_packed_input={self.binary_input}"


class UnitSequential(nn.Sequential):
    """An ``nn.Sequential`` that runs its children unit by unit (same children, same keys)."""

    memory_units: list[Unit]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for unit in self.memory_units:
            x = unit(x)
        return x


def split_units(seq: nn.Sequential, name: str) -> list[Unit]:
    """The units of one Sequential (module docstring); an input is binary when the layer before the
    unit is a Heaviside neuron (the Sequential's own input is not known to be)."""
    units: list[Unit] = []
    run: list[nn.Module] = []
    run_binary = prev_binary = False
    for i, child in enumerate(seq):
        if _has_neuron(child) and not _in_neuron_slot(child):  # a block: a unit of its own
            if run:
                units.append(Unit(run, run_binary, f"{name}[{i - len(run)}:{i}]"))
                run = []
            units.append(Unit([child], prev_binary, f"{name}[{i}]"))
            prev_binary = False
            continue
        if not run:
            run_binary = prev_binary
        run.append(child)
        prev_binary = heaviside_output(child)
        if _in_neuron_slot(child):
            units.append(Unit(run, run_binary, f"{name}[{i + 1 - len(run)}:{i + 1}]"))
            run = []
    if run:
        units.append(Unit(run, run_binary, f"{name}[{len(seq) - len(run)}:{len(seq)}]"))
    return units


def _sequentials(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Sequential]]:
    """The outermost Sequentials holding neurons (a block inside one becomes a unit, not searched)."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.Sequential) and _has_neuron(child):
            yield path, child
        elif not isinstance(child, nn.Sequential):
            yield from _sequentials(child, path)


def units_of(net: nn.Module) -> list[Unit]:
    """Every unit of a network prepared by :func:`apply_memory` (empty otherwise)."""
    return [u for m in net.modules() if isinstance(m, UnitSequential) for u in m.memory_units]


def apply_memory(net: nn.Module, mode: str) -> nn.Module:
    """Prepare ``net`` for ``memory=<mode>`` in place (``none``: unchanged); returns ``net``."""
    if mode not in MODES:
        raise ConfigError(f"memory={mode!r} is not a memory mode; choose one of: {', '.join(MODES)}")
    if mode == "none":
        return net
    found = False
    for path, seq in list(_sequentials(net)):
        units = split_units(seq, path)
        seq.__class__ = UnitSequential
        seq.__dict__["memory_units"] = units  # a plain attribute: not a submodule of the network
        found = found or any(u.checkpointed for u in units)
    if not found:
        raise ConfigError(f"memory={mode} found no nn.Sequential of layers with neurons in {type(net).__name__} "
                          "to recompute; use memory=none for this model")
    return net


# ---- memory=auto: spikingjelly's optimize_memory chooses the units -----------------------------
class _UnitTable(nn.Module):
    """The units as one module tree, the form ``optimize_memory`` searches (it wraps chosen units)."""

    def __init__(self, units: list[Unit]) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)


def choose_units(net: nn.Module, example: Any, level: int | None, budget: str) -> list[str]:
    """``memory=auto``: run ``optimize_memory`` (``example()`` runs the network's forward on a training
    batch) and keep the units it checkpoints; the others run without recompute. The network's state
    (buffers, neuron state, private generators, gradients, global RNG) is as before the call. Level:
    ``None`` = 4 on CUDA (memory search), 1 elsewhere (a probe of the unit inputs, no search). Returns
    the names of the chosen units."""
    if budget not in BUDGETS:
        raise ConfigError(f"memory.budget={budget!r} is not a memopt checkpoint budget; choose one of: "
                          f"{', '.join(BUDGETS)}")
    units = [u for u in units_of(net) if u.checkpointed]
    if not units:
        return []
    on_cuda = next(net.parameters()).is_cuda
    level = (4 if on_cuda else 1) if level is None else int(level)
    if level > 1 and not on_cuda:
        raise ConfigError(f"memory.level={level} searches by CUDA peak memory; on CPU use memory.level=1 (or null)")
    table = _UnitTable(units)
    seqs = [m for m in net.modules() if isinstance(m, UnitSequential)]
    own = [m.memory_units for m in seqs]
    index = {id(u): i for i, u in enumerate(units)}
    for m in seqs:  # route every unit through the table, where memopt puts its wrappers
        m.__dict__["memory_units"] = [_Routed(table, index[id(u)]) if id(u) in index else u for u in m.memory_units]
    for u in units:
        u.checkpointed = False  # memopt's own wrappers do the recompute during its search
    group = torch.distributed.group.WORLD if torch.distributed.is_initialized() else None
    saved = _snapshot(net)
    try:
        optimize_memory(table, Unit, _ProbeFirst(example), level=level, checkpoint_budget=budget,
                        compress=False, process_group=group)
    finally:
        _restore(net, saved)
        for m, mine in zip(seqs, own, strict=True):
            m.__dict__["memory_units"] = mine
    chosen = [table.units[i] is not u for i, u in enumerate(units)]  # replaced by a memopt wrapper
    for u, c in zip(units, chosen, strict=True):
        u.checkpointed = c
    return [u.unit_name for u, c in zip(units, chosen, strict=True) if c]


class _ProbeFirst:
    """``example_forward`` for optimize_memory: its first call is the probe of the unit inputs, which
    needs no graph; running it without one keeps the probe's peak at inference size (the later calls of
    the CUDA search measure forward + backward and keep the graph)."""

    def __init__(self, example: Any) -> None:
        self.example, self.calls = example, 0

    def __call__(self, _table: nn.Module) -> Any:
        self.calls += 1
        with torch.no_grad() if self.calls == 1 else contextlib.nullcontext():
            return self.example()


class _Routed:
    """A unit looked up in the table at call time (memopt replaces the table's entries)."""

    def __init__(self, table: _UnitTable, i: int) -> None:
        self.table, self.i = table, i

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.table.units[self.i](x)


def _snapshot(net: nn.Module) -> dict[str, Any]:
    gens = _generators(net)
    return {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "gens": [(g, g.get_state()) for g in gens],
        "buffers": [(b, b.detach().clone()) for b in net.buffers()],
        "memories": [_clone(v) for v in base.extract_memories(net)],
        "grads": [(p, None if p.grad is None else p.grad.detach().clone()) for p in net.parameters()],
    }


def _restore(net: nn.Module, s: dict[str, Any]) -> None:
    torch.set_rng_state(s["rng"])
    if s["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(s["cuda_rng"])
    for g, state in s["gens"]:
        g.set_state(state)
    with torch.no_grad():
        for b, v in s["buffers"]:
            b.copy_(v)
    base.load_memories(net, s["memories"])
    for p, g in s["grads"]:
        p.grad = g

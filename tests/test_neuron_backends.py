"""Neuron implementations (docs/performance.md "GPU"): ``neuron.backend`` selection, fused == reference (outputs and
gradients, every neuron kind), and the float32 membrane state under bf16 autocast."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from spikingjelly.activation_based import functional

from spikeforge.errors import ConfigError
from spikeforge.neurons import backend, build_neuron

# every neuron kind with a membrane potential, with parameters that make the comparison cover
# their options (learnable per-channel ASGL width and decay; a DSR threshold the input crosses)
KINDS: dict[str, dict[str, Any]] = {
    "lif": {},
    "if": {},
    "stbp_lif": {},
    "sltt_lif": {},
    "asgl_lif": {"granularity": "channel", "num_features": 3, "train_decay": True},
    "dsr_if": {"v_threshold": 1.0},
    "dsr_lif": {},
}


@pytest.fixture
def compile_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh compiled functions with ``torch.compile(backend=request.param, fullgraph=True)``: the
    whole loop over T must be one graph."""
    monkeypatch.setattr(backend, "_COMPILED", {})
    monkeypatch.setattr(backend, "COMPILE_OPTIONS", {"fullgraph": True, "backend": request.param})
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _run(kind: str, impl: str, x: torch.Tensor, seed: int = 1) -> list[torch.Tensor]:
    """Outputs, then gradients of a random projection of them w.r.t. the input and every trainable
    parameter (ASGL in training: its hybrid mask is drawn from the same seed in both)."""
    torch.manual_seed(seed)
    n = build_neuron(kind, backend=impl, **KINDS[kind])
    out = n(x)
    params = [p for p in n.parameters() if p.requires_grad]
    grads = torch.autograd.grad((out * torch.randn_like(out)).sum(), [x, *params])
    return [out.detach(), *grads]


def _assert_equal(kind: str, T: int) -> None:
    torch.manual_seed(0)
    x = (torch.randn(T, 2, 3, 4, 4) * 1.5).requires_grad_()
    for ref, fused in zip(_run(kind, "reference", x), _run(kind, "fused", x), strict=True):
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()) + 1e-12)


# ---- selection ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_unknown_backend_is_refused(kind: str) -> None:
    with pytest.raises(ConfigError, match=r"neuron\.backend 'triton'; choose one of: auto, reference, fused"):
        build_neuron(kind, backend="triton", **KINDS[kind])


def test_auto_selects_fused_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "fused_unavailable_reason", lambda device_type: None)
    assert backend.use_fused("auto", torch.device("cuda", 0))
    assert not backend.use_fused("auto", torch.device("cpu"))
    assert not backend.use_fused("reference", torch.device("cuda", 0))
    assert backend.use_fused("fused", torch.device("cpu"))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # inside model.compile: trace the loop
    assert not backend.use_fused("fused", torch.device("cuda", 0))


def test_auto_falls_back_and_fused_fails_clearly_where_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "fused_unavailable_reason", lambda device_type: "Triton is not installed")
    assert not backend.use_fused("auto", torch.device("cuda", 0))
    with pytest.raises(ConfigError) as e:
        backend.use_fused("fused", torch.device("cuda", 0))
    assert str(e.value) == ("neuron.backend=fused cannot run on cuda: Triton is not installed; "
                            "use neuron.backend=auto (or reference)")
    n = build_neuron("stbp_lif", backend="fused")
    with pytest.raises(ConfigError, match=r"neuron\.backend=fused cannot run"):
        n(torch.randn(2, 3))


def test_availability_is_decided_by_the_device() -> None:
    assert backend.fused_unavailable_reason("mps") == "no fused implementation for device type 'mps'"
    cpu = backend.fused_unavailable_reason("cpu")
    assert cpu is None or "C++ compiler" in cpu


@pytest.mark.parametrize("kind", KINDS)
def test_auto_runs_the_reference_on_cpu(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compile(fn: Any) -> Any:
        raise AssertionError("auto compiled a neuron on CPU")

    monkeypatch.setattr(backend, "compiled", no_compile)
    for mod in ("stbp", "asgl", "sltt", "dsr"):
        monkeypatch.setattr(f"spikeforge.neurons.{mod}.compiled", no_compile, raising=False)
    build_neuron(kind, **KINDS[kind])(torch.randn(3, 2, 3, 4, 4))


# ---- fused == reference ------------------------------------------------------------------------
# Fast: the compiled graph as torch.compile captures it (Dynamo + AOTAutograd, custom autograd
# Functions included), executed without code generation, so the suite needs no C++ build.
@pytest.mark.parametrize("compile_backend", ["aot_eager"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_fused_matches_reference_captured(kind: str, compile_backend: None) -> None:
    _assert_equal(kind, T=4)


# Slow: Inductor's generated C++ kernels (on CUDA the same graph becomes Triton kernels: gpu_check).
@pytest.mark.slow
@pytest.mark.skipif(backend.fused_unavailable_reason("cpu") is not None, reason="no C++ compiler")
@pytest.mark.parametrize("compile_backend", ["inductor"], indirect=True)
@pytest.mark.parametrize("kind", KINDS)
def test_fused_matches_reference_inductor(kind: str, compile_backend: None) -> None:
    _assert_equal(kind, T=8)


@pytest.mark.parametrize("compile_backend", ["aot_eager"], indirect=True)
def test_fused_sltt_keeps_the_temporal_cut(compile_backend: None) -> None:
    """The gradient of the first step's input from the last step's output is 0 (v_{t−1} detached)."""
    x = (torch.randn(4, 8) + 1.0).requires_grad_()
    out = build_neuron("sltt_lif", backend="fused")(x)
    (g,) = torch.autograd.grad(out[-1].sum(), x)
    assert torch.count_nonzero(g[:-1]) == 0 and torch.count_nonzero(g[-1]) > 0


# ---- float32 membrane state under autocast ---------------------------------------------------------
def _trajectory(kind: str, x: torch.Tensor, autocast: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The state after each of the T steps (the last state of every prefix run), and the outputs."""
    n = build_neuron(kind, **{**KINDS[kind], **({"p": 0.0} if kind == "asgl_lif" else {})})
    states = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for t in range(1, x.shape[0] + 1):
            functional.reset_net(n)
            out = n(x[:t])
            if hasattr(n, "v"):
                states.append(n.v)
    return states, out


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_membrane_trajectory_matches_fp32(kind: str) -> None:
    """bf16 inputs under CPU autocast: the state stays float32 and follows the float32 run of the same
    (bf16-rounded) inputs over T = 8; a bf16 state would drift by ~1e-2 (8 bits of mantissa)."""
    torch.manual_seed(0)
    x = (torch.randn(8, 4, 3, 4, 4) * 1.5).bfloat16()
    states16, out16 = _trajectory(kind, x, autocast=True)
    states32, out32 = _trajectory(kind, x.float(), autocast=False)
    for v16, v32 in zip(states16, states32, strict=True):
        assert v16.dtype == torch.float32
        torch.testing.assert_close(v16, v32, rtol=1e-5, atol=1e-5)
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), out32.bfloat16().float(), rtol=0, atol=0)

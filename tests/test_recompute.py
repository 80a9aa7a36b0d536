"""``memory=checkpoint|auto`` (spikeforge.recompute): exact recompute for every BPTT-style method.

Gradients, weights and the loss trajectory equal ``memory=none``; BatchNorm statistics, neuron state
and ASGL's private mask stream are neither counted nor drawn twice; bit-packing only of inputs that
follow a Heaviside neuron; DDP and bf16 autocast; SLTT refuses it."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_cfg
from infra_utils import PY, ROOT, TINY, env, run_train
from spikingjelly.activation_based import functional

from spikeforge import recompute
from spikeforge.errors import ConfigError
from spikeforge.layers import norm_factory
from spikeforge.models import build_model
from spikeforge.neurons import neuron_factory
from spikeforge.recompute import apply_memory, choose_units, units_of
from spikeforge.run import build_module

BPTT_METHODS = ["asgl", "asgl_sg", "bptt", "bptt_sltt", "dsr", "dsr_ann", "dsr_lif", "stbp_tdbn", "stds"]


def _net(model: str, kind: str, **kw: object) -> torch.nn.Module:
    extra = {"width": 4} if model == "preact_spiking_resnet18" else {"channels": (4, 8)}
    params = {"p": 0.5} if kind == "asgl_lif" else {}
    return build_model(model, 10, 3, neuron=neuron_factory(kind, **params), norm=norm_factory("bn"), **extra, **kw)


def _step(net: torch.nn.Module, x: torch.Tensor, reset: bool = True, amp: bool = False) -> dict[str, object]:
    """One forward + backward; outputs, gradients, buffers and the mask stream's state after it."""
    gen = torch.Generator().manual_seed(3)
    for m in net.modules():
        if hasattr(m, "generator"):
            m.generator = gen
    if reset:
        functional.reset_net(net)
    with torch.autocast("cpu", torch.bfloat16, enabled=amp):
        out = net(x)
    functional.reset_net(net)
    out.float().square().mean().backward()
    return {"out": out.detach().float(), "gen": gen.get_state(),
            "grads": {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None},
            "buffers": {k: b.detach().clone() for k, b in net.named_buffers()}}


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    def close(u: torch.Tensor, v: torch.Tensor) -> bool:
        return u.shape == v.shape and torch.allclose(u.float(), v.float(), rtol=1e-5, atol=1e-7)

    return (close(a["out"], b["out"]) and torch.equal(a["gen"], b["gen"])
            and a["grads"].keys() == b["grads"].keys() and all(close(a["grads"][k], b["grads"][k]) for k in a["grads"])
            and all(close(a["buffers"][k], b["buffers"][k]) for k in a["buffers"]))


def test_units_bit_pack_only_inputs_that_follow_a_heaviside_neuron() -> None:
    packed = {kind: [u.binary_input for u in units_of(apply_memory(_net("convnet", kind), "checkpoint"))]
              for kind in ("lif", "stbp_lif", "asgl_lif", "dsr_if")}
    # conv→pool→bn→neuron | conv→pool→bn→neuron: the unit after a lif/stbp spike is packed
    assert packed["lif"] == packed["stbp_lif"] == [False, True]
    assert packed["asgl_lif"] == packed["dsr_if"] == [False, False]  # hybrid / {0, V_th} outputs
    res = units_of(apply_memory(_net("preact_spiking_resnet18", "lif"), "checkpoint"))
    assert len(res) == 8 and not any(u.binary_input for u in res)  # blocks take the real residual stream
    net = _net("convnet", "lif")
    keys = list(net.state_dict())
    assert list(apply_memory(net, "checkpoint").state_dict()) == keys  # same module tree and keys


@pytest.mark.parametrize(("model", "kind", "amp"), [
    ("convnet", "lif", False), ("convnet", "stbp_lif", False), ("convnet", "asgl_lif", False),
    ("convnet", "dsr_if", False), ("preact_spiking_resnet18", "lif", False),
    ("preact_spiking_resnet18", "asgl_lif", False), ("convnet", "lif", True), ("preact_spiking_resnet18", "lif", True),
])
def test_checkpoint_equals_none(model: str, kind: str, amp: bool) -> None:
    """Outputs, gradients, BN running statistics and the ASGL mask stream after one step (fp32, bf16)."""
    torch.manual_seed(0)
    net = _net(model, kind)
    x = torch.rand(2, 4, 3, 8, 8)
    ck = apply_memory(copy.deepcopy(net), "checkpoint")
    assert _same(_step(net, x, amp=amp), _step(ck, x, amp=amp))


def test_recompute_starts_from_the_forwards_neuron_state() -> None:
    """A forward from a non-reset state (the state is reset before backward): the recompute replays it."""
    torch.manual_seed(0)
    net = _net("convnet", "lif")
    ck = apply_memory(copy.deepcopy(net), "checkpoint")
    x0, x = torch.rand(2, 2, 3, 8, 8), torch.rand(2, 2, 3, 8, 8)
    for n in (net, ck):
        with torch.no_grad():
            n(x0)  # leaves a membrane state behind
    assert _same(_step(net, x, reset=False), _step(ck, x, reset=False))


def test_without_the_safeguards_the_recompute_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: a recompute that redraws ASGL's masks changes the gradients and advances
    the stream twice; one that keeps its BatchNorm update counts the batch twice."""
    torch.manual_seed(0)
    net = _net("convnet", "asgl_lif")
    x = torch.rand(2, 4, 3, 8, 8)
    ref = _step(copy.deepcopy(net), x)
    monkeypatch.setattr(recompute, "_generators", lambda body: [])
    redraw = _step(apply_memory(copy.deepcopy(net), "checkpoint"), x)
    assert not torch.equal(ref["gen"], redraw["gen"])
    assert any(not torch.allclose(ref["grads"][k], redraw["grads"][k]) for k in ref["grads"])
    monkeypatch.undo()
    monkeypatch.setattr(recompute._Recompute, "__exit__", lambda self, *e: None)
    twice = _step(apply_memory(copy.deepcopy(net), "checkpoint"), x)
    k = "features.2.running_mean"  # the first norm (conv → pool → norm)
    assert not torch.allclose(ref["buffers"][k], twice["buffers"][k])


def test_a_non_binary_input_is_never_bit_packed() -> None:
    """Packing the real-valued residual stream would silently corrupt the step: refused loudly."""
    net = apply_memory(_net("preact_spiking_resnet18", "lif"), "checkpoint")
    units_of(net)[1].binary_input = True  # pretend: layer1[1] takes layer1[0]'s residual sum
    functional.reset_net(net)
    with pytest.raises(RuntimeError, match=r"layer1\[1\].*not binary"):
        net(torch.rand(2, 2, 3, 8, 8))


def test_auto_chooses_units_without_touching_the_run() -> None:
    """memory=auto on CPU: memopt level 1 (a probe, no search) picks the largest-input units; the probe
    leaves buffers, neuron state, the mask stream and gradients as they were."""
    torch.manual_seed(0)
    net = apply_memory(_net("preact_spiking_resnet18", "asgl_lif"), "auto")
    gen = torch.Generator().manual_seed(5)
    for m in net.modules():
        if hasattr(m, "generator"):
            m.generator = gen
    before = {k: b.clone() for k, b in net.state_dict().items()}
    g0 = gen.get_state()
    x = torch.rand(2, 2, 3, 8, 8)
    chosen = choose_units(net, lambda: net(x), None, "balanced")
    assert len(chosen) == 6 and "layer1[0]" in chosen and "layer4[1]" not in chosen  # ceil(0.75 · 8)
    assert torch.equal(gen.get_state(), g0) and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ConfigError, match=r"memory\.level=4 searches by CUDA peak memory"):
        choose_units(net, lambda: net(x), 4, "balanced")


class _Batches:
    """Fixed batches as a train loader (an iterable with a length, not a dataset to be collated)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.batches)


def _fit(method: str, memory: str, precision: str = "32-true", root: Path | None = None
         ) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Three training steps of ``method`` on fixed random batches (Lightning, automatic optimisation as
    in a run): the loss of every step and the final state dict."""
    cfg = compose_cfg([f"method={method}", f"memory={memory}", "model.channels=[4,8]", "model.pool_size=1", "T=2",
                       *(["T=1"] if method == "dsr_ann" else [])])
    L.seed_everything(0, verbose=False)
    module = build_module(cfg)
    g = torch.Generator().manual_seed(1)
    batches = _Batches([(torch.rand(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
                        for _ in range(3)])
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            losses.append(float(outputs["loss"]))

    # a bare Trainer compares the arithmetic of the memory modes (no run); DDP and resume with the shipped
    # defaults, progress bar on, are tested through src/train.py in test_scaleout.py and test_resume.py
    L.Trainer(max_steps=3, max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[Record()],
              precision=precision, default_root_dir=root).fit(module, train_dataloaders=batches)
    return losses, {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("method", BPTT_METHODS)
def test_every_bptt_method_trains_the_same_with_checkpoint_and_auto(method: str, tmp_path: Path) -> None:
    # the Trainer's root in tmp_path: STDS writes sparse_weights.pt there at the end of fitting
    ref_loss, ref_state = _fit(method, "none", root=tmp_path)
    for memory in ("checkpoint", "auto"):
        loss, state = _fit(method, memory, root=tmp_path)
        assert loss == pytest.approx(ref_loss, rel=1e-6, abs=1e-7), memory
        bad = [k for k in ref_state if not torch.allclose(ref_state[k].float(), state[k].float(), rtol=1e-5, atol=1e-6)]
        assert not bad, f"memory={memory}: {bad}"


def test_bf16_mixed_trains_the_same_with_checkpoint() -> None:
    ref_loss, ref_state = _fit("bptt", "none", "bf16-mixed")
    loss, state = _fit("bptt", "checkpoint", "bf16-mixed")
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert all(torch.allclose(ref_state[k].float(), state[k].float(), rtol=1e-5, atol=1e-6) for k in ref_state)


@pytest.mark.parametrize("method", ["sltt", "sltt_k"])
def test_per_step_methods_refuse_checkpoint(method: str) -> None:
    cfg = compose_cfg([f"method={method}", "memory=checkpoint"])
    with pytest.raises(ConfigError, match=rf"method={method} runs each time step's forward and backward on its "
                                          r"own .* use memory=none, or memory=checkpoint\|auto with a BPTT-style"):
        build_module(cfg)


def test_compile_refuses_checkpoint() -> None:
    with pytest.raises(ConfigError, match=r"memory=checkpoint and model\.compile=true cannot be combined"):
        build_module(compose_cfg(["memory=checkpoint", "model.compile=true"]))


def test_two_gloo_ranks_ddp_checkpoint_and_auto_equal_none(tmp_path: Path) -> None:
    """torch DDP on 2 gloo ranks, ASGL with per-rank mask streams; auto's probe agreed over the group."""
    out = tmp_path / "diffs.pt"
    r = subprocess.run([PY, str(ROOT / "tests" / "ddp_probes.py"), "recompute", str(out)], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    diffs = torch.load(out)
    assert diffs["ranks"] == 0.0  # DDP: both ranks hold the same weights
    assert diffs["checkpoint"] <= 1e-6 and diffs["auto"] <= 1e-6, diffs


@pytest.mark.slow
def test_two_rank_ddp_asgl_trains_the_same_with_checkpoint_and_auto(tmp_path: Path) -> None:
    """trainer=ddp_cpu, 2 ranks, ASGL (per-rank mask streams; auto's probe sizes agreed over the group)."""
    dump = tmp_path / "dump"
    r = run_train(["-m", *TINY, "method=asgl", "memory=none,checkpoint,auto", "trainer=ddp_cpu", "trainer.devices=2",
                   "trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1",
                   "test=false", "inference_cost=false", "reliability.checkpoint_every_n_steps=0",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", "callbacks=none", "logger=csv",
                   "+callbacks.dump._target_=infra_utils.DumpWeights",
                   f"+callbacks.dump.dirpath={dump}/$" + "{memory.mode}"],
                  timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    states = {f"{p.parent.name}/{p.stem}": torch.load(p, weights_only=False)["state"] for p in dump.rglob("*.pt")}
    assert len(states) == 6, sorted(states)
    ref = states["none/weights_rank0_T2"]
    for name, st in states.items():
        bad = [k for k in ref if not torch.allclose(ref[k].float(), st[k].float(), rtol=1e-5, atol=1e-6)]
        assert not bad, f"{name}: {bad}"

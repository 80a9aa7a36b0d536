"""Export a trained network (``python src/export.py ckpt_path=... format=nir|torchscript|onnx``).

Every export is reloaded from its file and run on a batch of the checkpoint's own test data; the
outputs are compared with the PyTorch network and the check is written to ``export_results.json``:

- ``torchscript``: ``torch.jit.trace`` of input → class scores (the method's readout), reloaded with
  ``torch.jit.load``. Any network.
- ``onnx``: the same function through ``torch.onnx.export``, reloaded and run by onnxruntime. Any network.
- ``nir``: the Neuromorphic Intermediate Representation (read by Lava/Loihi, SpiNNaker2, Speck, Xylo,
  Norse, snnTorch, ...) written by spikingjelly's exchange (``nir_exchange.export_to_nir``). NIR has no
  batch norm: each BN/tdBN is folded into the conv before it (:func:`spikeforge.layers.tdbn.fold_sequential`).
  The graph takes one time step of the encoded input ``[N, C, H, W]`` and gives the per-step outputs of
  the read-out layer. It is read back with the ``nir`` package, rebuilt by spikingjelly's importer and
  stepped T times: its spikes must equal those of the (folded) PyTorch network in every layer and its
  outputs must match within :data:`NIR_ATOL`; the agreement with the unfolded checkpoint network
  (different float rounding of the folded weights) is reported too.

NIR's IF/LIF reset to a fixed potential and emit unit spikes, so soft-reset neurons (SLTT, DSR, the
SLTT BPTT baseline), DSR's trainable-threshold neurons, ReLU layers and ASGL neurons with θ ≠ 1 stop
the NIR export with one sentence naming the layers and the nearest exportable network.
"""

from __future__ import annotations

import copy
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

from spikeforge.errors import ExportError
from spikeforge.layers.norm import IdentityNorm, TimeBatchNorm
from spikeforge.layers.tdbn import fold_sequential, plain_weights
from spikeforge.neurons import is_neuron
from spikeforge.summary_format import export_line


class _PassThrough(nn.Module):
    """Identity that graph tracing steps through (``nn.Identity`` would become a node NIR has no type for)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


FORMATS = {"nir": ".nir", "torchscript": ".pt", "onnx": ".onnx"}
# NIR graph vs the folded PyTorch network: the same float32 operations, so the spikes are equal and the
# outputs differ by summation order only
NIR_ATOL = 1e-5
# TorchScript / ONNX vs PyTorch (ONNX Runtime fuses and reorders float32 operations)
ATOL = {"torchscript": 1e-6, "onnx": 1e-4}

# layers the NIR exchange maps (spikingjelly nir_exchange.to_nir) or that vanish in an eval-mode graph
_NIR_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.Flatten, _PassThrough, nn.Sequential,
               sj_neuron.IFNode, sj_neuron.LIFNode)
_ALTERNATIVE = ("a hard-reset LIF/IF network (method=bptt, stds, stbp_tdbn, or asgl with v_threshold 1), or "
                "format=onnx, which keeps every neuron")


class Classifier(nn.Module):
    """Input as the data gives it (``[N, C, H, W]`` images or ``[N, T, C, H, W]`` frames) → class scores."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.net = module.net  # the parameters; the LightningModule itself stays out of the traced graph
        object.__setattr__(self, "_method", module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._method.readout(self._method(x))


# ---- NIR ------------------------------------------------------------------------------------------
def _unexportable(m: nn.Module) -> str | None:
    """Why NIR cannot express neuron ``m`` (None when it can, possibly after :func:`_nir_neuron`)."""
    from spikeforge.neurons.asgl import ASGLLIF
    from spikeforge.neurons.basic import IFNeuron, LIFNeuron, ReLUNeuron
    from spikeforge.neurons.dsr import DSRNeuron
    from spikeforge.neurons.sltt import SLTTLIFNeuron
    from spikeforge.neurons.stbp import STBPLIFNode

    if type(m) in (sj_neuron.LIFNode, sj_neuron.IFNode, LIFNeuron, IFNeuron, SLTTLIFNeuron):
        return "reset by subtraction (v_reset=None)" if m.v_reset is None else None
    if isinstance(m, STBPLIFNode):
        return None if 0.0 < m.decay < 1.0 else f"decay {m.decay} outside (0, 1)"
    if isinstance(m, ASGLLIF):
        return None if m.v_threshold == 1.0 else f"output θ·s with θ={m.v_threshold} (NIR spikes are 1)"
    if isinstance(m, DSRNeuron):
        return "reset by subtraction and a trainable threshold (DSR)"
    if isinstance(m, ReLUNeuron):
        return "a ReLU layer (an ANN)"
    return f"{type(m).__name__} (no IF/LIF dynamics with a fixed reset)"


def _nir_neuron(m: nn.Module) -> nn.Module:
    """spikingjelly's ``LIFNode``/``IFNode`` with the forward dynamics of ``m`` (what the exchange maps)."""
    from spikeforge.neurons.asgl import ASGLLIF
    from spikeforge.neurons.basic import IFNeuron
    from spikeforge.neurons.stbp import STBPLIFNode

    if type(m) in (sj_neuron.LIFNode, sj_neuron.IFNode):
        return m
    if isinstance(m, IFNeuron):  # spikeforge's IF (fp32 state, backends): the plain node for the exchange
        return sj_neuron.IFNode(v_threshold=m.v_threshold, v_reset=m.v_reset, step_mode=m.step_mode)
    # spikeforge's LIF and SLTT's (hard reset): the plain node
    if isinstance(m, sj_neuron.LIFNode | sj_neuron.BaseNode) and hasattr(m, "tau"):
        return sj_neuron.LIFNode(tau=m.tau, decay_input=m.decay_input, v_threshold=m.v_threshold,
                                 v_reset=m.v_reset, step_mode=m.step_mode)
    # u_t = d·u_{t−1} + x_t, hard reset to 0 = LIFNode(decay_input=False, tau = 1/(1 − d)) (stbp_tdbn.md,
    # asgl.md "Neuron"); NIR/spikingjelly fire at u ≥ V_th, STBP at u > V_th (equal only at exact equality)
    if isinstance(m, STBPLIFNode):
        d = m.decay
    elif isinstance(m, ASGLLIF):
        d = float(m.decay)
    else:
        raise ExportError(f"no NIR mapping for {type(m).__name__}")
    return sj_neuron.LIFNode(tau=1.0 / (1.0 - d), decay_input=False, v_threshold=m.v_threshold, v_reset=0.0,
                             step_mode=m.step_mode)


def _replace(parent: nn.Module, fn: Any) -> None:
    """Replace every child ``c`` of ``parent`` (recursively) by ``fn(name, c)`` where it returns a module."""
    for name, child in list(parent.named_children()):
        new = fn(name, child)
        if new is not None and new is not child:
            setattr(parent, name, new)
        else:
            _replace(child, fn)


def nir_network(net: nn.Module, seq_input: torch.Tensor, neuron_kind: str) -> nn.Module:
    """A copy of ``net`` (eval mode) that spikingjelly's NIR exchange can map: BN folded into the conv
    before it, neurons as ``LIFNode``/``IFNode``, dropout gone, adaptive pools as fixed ``AvgPool2d``."""
    net = copy.deepcopy(net).eval()
    bad = {n: why for n, m in net.named_modules() if is_neuron(m) and (why := _unexportable(m))}
    if bad:
        names = ", ".join(sorted(bad)[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        raise ExportError(f"NIR cannot express the {neuron_kind} neurons of this network ({names}: "
                          f"{next(iter(bad.values()))}); NIR's IF/LIF reset to a fixed potential and emit unit "
                          f"spikes; nearest exportable: {_ALTERNATIVE}")
    fold_sequential(net)
    # sizes seen by adaptive pools, to replace them by the fixed pool they are for this input
    sizes: dict[nn.Module, tuple[int, ...]] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o: sizes.__setitem__(mod, tuple(i[0].shape[-2:])))
             for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    with torch.no_grad():
        functional.reset_net(net)
        net(seq_input)
        functional.reset_net(net)
    for h in hooks:
        h.remove()

    def convert(name: str, m: nn.Module) -> nn.Module | None:
        if is_neuron(m):
            return _nir_neuron(m)
        if isinstance(m, IdentityNorm | nn.Identity | nn.Dropout | layer.Dropout):
            return _PassThrough()
        if isinstance(m, nn.AdaptiveAvgPool2d) and m in sizes:
            (h, w), out = sizes[m], m.output_size
            oh, ow = (out, out) if isinstance(out, int) else (out[0] or h, out[1] or w)
            if h % oh or w % ow:
                raise ExportError(f"NIR cannot express {name} (adaptive pool {h}x{w} -> {oh}x{ow} is not a fixed "
                                  "pooling); choose an output size that divides the feature map (convnet: "
                                  "model.pool_size), or format=onnx")
            return layer.AvgPool2d((h // oh, w // ow), step_mode=getattr(m, "step_mode", "m"))
        return None

    _replace(net, convert)
    functional.invalidate_reset_cache(net)
    inside_neurons = {f"{n}." for n, m in net.named_modules() if is_neuron(m)}  # surrogate functions
    others = sorted({type(m).__name__ for n, m in net.named_modules()
                     if not isinstance(m, (*_NIR_LAYERS, TimeBatchNorm)) and not list(m.children())
                     and not any(n.startswith(p) for p in inside_neurons)})
    if others or any(isinstance(m, TimeBatchNorm) for m in net.modules()):
        what = ", ".join(others) or "a batch norm that does not follow a conv"
        raise ExportError(f"NIR cannot express layers of this model ({what}); NIR maps conv, linear, avg-pool, "
                          f"flatten and IF/LIF layers (model=convnet); or use format=onnx")
    return net


def _record_spikes(modules: list[nn.Module]) -> tuple[list[torch.Tensor], list[Any]]:
    """Outputs of ``modules`` in call order (a neuron's spikes; a stateful NIR module returns (out, state))."""
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((o[0] if isinstance(o, tuple) else o).detach()))
             for m in modules]
    return seen, hooks


def export_nir(module: nn.Module, x: torch.Tensor, path: Path, neuron_kind: str, dt: float = 1e-4) -> dict[str, Any]:
    """Write the NIR graph of ``module.net`` to ``path``, read it back, step it over the encoded batch
    ``x`` and compare spikes and outputs with PyTorch (the check, as a dict; ExportError if they differ)."""
    import nir
    from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir

    seq = module.encode(x)
    if seq.dim() == x.dim():
        raise ExportError("NIR export needs a model fed the time-major input [T, N, ...]; this model repeats its "
                          "input over T itself after its stem: use model=convnet, or format=onnx / torchscript")
    T = seq.shape[0]
    net = nir_network(module.net, seq, neuron_kind)
    with torch.no_grad():
        neurons = [m for m in net.modules() if is_neuron(m)]
        spikes, hooks = _record_spikes(neurons)
        functional.reset_net(net)
        torch_out = net(seq)
        functional.reset_net(net)
        for h in hooks:
            h.remove()
        torch_spikes = list(spikes)
        functional.reset_net(module.net)
        checkpoint_out = module.net(seq)  # the unfolded network of the checkpoint
        functional.reset_net(module.net)

    export_to_nir(net, seq, save_path=path, dt=dt)
    graph = nir.read(path)  # the file, as a NIR tool reads it
    gm = import_from_nir(graph, dt=dt, step_mode="s").eval()
    stateful = [m for m in gm.modules() if type(m).__name__ == "_NIRStatefulModule"]
    spikes, hooks = _record_spikes(stateful)
    outs, state = [], None
    with torch.no_grad():
        for t in range(T):
            out, state = gm(seq[t], state)
            outs.append(out)
    for h in hooks:
        h.remove()
    nir_out = torch.stack(outs)
    n = len(stateful)  # single-step calls, layer by layer within a step: [T, N, ...] per layer
    nir_spikes = [torch.stack(spikes[i::n]) for i in range(n)] if n else []

    if len(nir_spikes) != len(torch_spikes) or nir_out.shape != torch_out.shape:
        raise ExportError(f"the NIR graph read back from {path} does not have the network's structure "
                          f"({len(nir_spikes)} neuron layers and output {tuple(nir_out.shape)}, expected "
                          f"{len(torch_spikes)} and {tuple(torch_out.shape)})")
    mismatched = [int((a != b).sum()) for a, b in zip(nir_spikes, torch_spikes)]
    total = sum(s.numel() for s in torch_spikes)
    diff = float((nir_out - torch_out).abs().max())
    ckpt_diff = float((nir_out - checkpoint_out).abs().max())
    check = {
        "nodes": sorted({type(n).__name__ for n in graph.nodes.values()}),
        "time_steps": T,
        "dt": dt,
        "neuron_layers": len(torch_spikes),
        "spikes_compared": total,
        "spikes_fired": int(sum(float(s.sum()) for s in torch_spikes)),
        "spike_mismatches": sum(mismatched),
        "max_abs_diff": diff,
        "atol": NIR_ATOL,
        "max_abs_diff_vs_unfolded": ckpt_diff,
        "predictions_equal_unfolded": bool((nir_out.mean(0).argmax(-1) == checkpoint_out.mean(0).argmax(-1)).all()),
    }
    if sum(mismatched) or not diff <= NIR_ATOL:
        raise ExportError(f"the NIR graph read back from {path} does not reproduce the network "
                          f"({sum(mismatched)} of {total} spikes differ, outputs up to {diff:.3g} apart, "
                          f"tolerance {NIR_ATOL})")
    return check


# ---- TorchScript / ONNX ---------------------------------------------------------------------------
def export_torchscript(module: nn.Module, x: torch.Tensor, path: Path) -> dict[str, Any]:
    model = Classifier(module).eval()
    with torch.no_grad():
        expected = model(x)
        with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still supported
            warnings.simplefilter("ignore", FutureWarning)
            try:
                torch.jit.trace(model, x, check_trace=False).save(str(path))
            except RuntimeError as e:
                m = re.search(r"Could not export Python function call '(\w+)'", str(e))
                if m is None:
                    raise
                raise ExportError(f"TorchScript cannot hold {m.group(1)} (a Python autograd function inside the "
                                  "neurons of this method); use format=onnx") from None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        got = torch.jit.load(str(path))(x)
    return _compare(got, expected, "torchscript", path)


def export_onnx(module: nn.Module, x: torch.Tensor, path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    for name in ("onnx_ir", "onnxscript"):  # the exporter's own optimisation passes log at INFO
        logging.getLogger(name).setLevel(logging.WARNING)

    model = Classifier(module).eval()
    with torch.no_grad():
        expected = model(x)
        with warnings.catch_warnings():  # neuron state is a plain attribute, reset before every call
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["scores"], dynamo=True,
                              verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    return _compare(got, expected, "onnx", path)


def _compare(got: torch.Tensor, expected: torch.Tensor, fmt: str, path: Path) -> dict[str, Any]:
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else math.inf
    if not diff <= ATOL[fmt]:
        raise ExportError(f"the {fmt} file {path} read back does not reproduce the network (outputs up to "
                          f"{diff:.3g} apart, tolerance {ATOL[fmt]})")
    return {"max_abs_diff": diff, "atol": ATOL[fmt],
            "predictions_equal": bool((got.argmax(-1) == expected.argmax(-1)).all())}


# ---- entry ----------------------------------------------------------------------------------------
def export(cfg: DictConfig) -> dict[str, Any]:
    """``conf/export.yaml``: load the checkpoint, export it in ``cfg.format``, check the file, write
    ``export_results.json`` into the run directory."""
    from spikeforge.run import build_datamodule, print_summary, restore_run
    from spikeforge.rundir import output_dir

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt} is not an export format; choose one of: {', '.join(FORMATS)}")
    run_cfg, module = restore_run(cfg.ckpt_path, cfg.paths, cfg.get("data_overrides"))
    out_dir = output_dir(cfg)
    module.eval()
    plain_weights(module.net)  # a reparametrised weight (STDS's w = M(θ)) as the plain weight it computes
    datamodule = build_datamodule(run_cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    x = next(iter(datamodule.test_dataloader()))[0][: int(cfg.num_samples)]

    path = Path(str(cfg.output)) if cfg.get("output") else out_dir / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fmt == "nir":
            check = export_nir(module, x, path, str(run_cfg.method.neuron.get("kind")), dt=float(cfg.dt))
        elif fmt == "torchscript":
            check = export_torchscript(module, x, path)
        else:
            check = export_onnx(module, x, path)
    except BaseException:
        path.unlink(missing_ok=True)  # a refused or failed export leaves no partial file
        raise
    results = {"format": fmt, "ckpt_path": str(cfg.ckpt_path), "file": str(path), "input_shape": list(x.shape),
               "method": run_cfg.method.get("name"), "model": run_cfg.model.get("name"),
               "data": run_cfg.data.get("name"), "T": run_cfg.get("T"), "check": check}
    from spikeforge.utils.io import atomic_write_json

    atomic_write_json(out_dir / "export_results.json", results)
    print_summary({k: v for k, v in results.items() if k != "check"} | {"test": {}})
    logging.getLogger("spikeforge").info("%s", export_line(results, out_dir / "export_results.json"))
    return results

"""scripts/bench.py: the saved-bytes counter, the ratios and targets, the report writer, one tiny
end-to-end run. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("spikeforge_bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["spikeforge_bench"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# ---- saved-for-backward bytes --------------------------------------------------------------------
def test_saved_bytes_known_graph() -> None:
    a = torch.randn(1000, requires_grad=True)  # float32: 4000 bytes per 1000-element tensor
    with bench.SavedBytesCounter() as c:
        b = a.exp()    # saves its result b                       → 4000 live
        d = b.sin()    # saves its input b: same storage, once    → 4000 live
        e = d * d      # saves d twice: one storage               → 8000 live
        f = e * 3.0    # a scalar factor: no tensor saved
    assert c.live == 8000 and c.peak == 8000
    assert c.peak_param_bytes == 0
    f.sum().backward()  # the graph is freed: nothing saved remains live
    assert c.live == 0 and c.peak == 8000
    assert torch.allclose(a.grad, 3 * 2 * d.detach() * b.detach().cos() * b.detach())


def test_saved_bytes_views_dropped_graph_and_parameters() -> None:
    lin = nn.Linear(10, 20, bias=False)  # weight 200 floats = 800 bytes
    x = torch.randn(4, 10, requires_grad=True)
    with bench.SavedBytesCounter(lin.parameters()) as c:
        h = lin(x)          # saves x (160 B) and the weight (800 B, a parameter)
        y = h.relu()        # saves its result (320 B)
    assert c.peak == 160 + 800 + 320
    assert c.peak_param_bytes == 800
    del h, y  # dropping the graph without backward releases its saved tensors too
    assert c.live == 0
    big = torch.randn(100, 100, requires_grad=True)
    with bench.SavedBytesCounter() as c2:
        z = big * 2.0
        w = z[:10] * z[:10]  # a view of z: z's whole storage counts once
    assert c2.peak == 100 * 100 * 4
    del w, z
    assert c2.live == 0


def test_saved_bytes_bptt_grows_with_T_and_online_loop_does_not() -> None:
    """BPTT through a LIF network keeps every step's graph; SLTT's per-step loop (sltt_lif, backward
    after each step) keeps one step's: the property SLTT's memory claim rests on (sltt.md)."""
    from spikingjelly.activation_based import functional, layer

    from spikeforge.neurons import build_neuron

    def peak(kind: str, T: int, online: bool) -> int:
        torch.manual_seed(0)
        net = nn.Sequential(layer.Linear(8, 16), build_neuron(kind), layer.Linear(16, 4))
        xs = [torch.rand(2, 8) for _ in range(T)]  # one storage per step (a view counts its whole storage)
        with bench.SavedBytesCounter(net.parameters()) as c:
            if online:
                functional.set_step_mode(net, "s")
                for t in range(T):
                    net(xs[t]).sum().backward()
            else:
                net(torch.stack(xs)).sum().backward()
        functional.reset_net(net)
        assert c.live == 0
        return c.peak - c.peak_param_bytes

    assert peak("lif", 8, online=False) > 6 * peak("lif", 1, online=False)
    assert peak("sltt_lif", 8, online=True) == peak("sltt_lif", 2, online=True)


# ---- grid, ratios, targets -----------------------------------------------------------------------
def test_parse_method_and_grid() -> None:
    assert bench.parse_method("sltt_k:K=1,seed=3") == ("sltt_k", {"K": "1", "seed": "3"})
    assert bench.method_label("sltt_k:K=1") == "sltt_k(K=1)"
    grid = bench.build_grid(["bptt"], ["convnet"], [1, 4], [8], ["method", "ann", "plain"], plain_T=[4])
    kinds = [(g["variant"], g["T"]) for g in grid]
    assert kinds == [("ann", 1), ("method", 1), ("method", 4), ("plain", 4)]


def _row(label: str, T: int, variant: str = "method", step: float = 1.0, saved: int = 100,
         model: str = bench.SLTT_RESNET) -> dict:
    name, _ = bench.parse_method(label.replace("(", ":").rstrip(")"))
    return {"method": name, "method_label": label, "model": model, "batch": 16, "T": T, "variant": variant,
            "step_s": step, "saved_bytes_peak": saved, "saved_param_bytes_at_peak": 10, "rss_peak_bytes": 10**9}


def test_ratios_and_targets() -> None:
    rows = [
        _row("sltt", 1, saved=100 * 10**6), _row("sltt", 6, step=6.0, saved=150 * 10**6),
        _row("sltt", 8, saved=105 * 10**6), _row("sltt", 6, "plain", step=5.0), _row("sltt", 1, "ann", step=1.0),
        _row("sltt_k(K=1)", 8, step=2.0), _row("bptt_sltt", 8, step=10.0),
        _row("bptt_sltt", 4, step=4.8), _row("bptt_sltt", 1, "ann", step=1.0),
        _row("bptt_sltt", 4, "plain", step=4.7),
        {**_row("bptt_sltt", 6), "error": "exit 1: boom"},
    ]
    bench.add_ratios(rows)
    assert rows[1]["ann_ratio"] == pytest.approx(1.0)
    assert rows[1]["overhead"] == pytest.approx(1.2)
    assert rows[7]["ann_ratio"] == pytest.approx(1.2)

    def status(prefix: str) -> str:
        (hit,) = [t for t in bench.evaluate_targets(rows) if t["target"].startswith(prefix)]
        return hit["status"]

    assert status("SLTT saved bytes T=8 <= 1.1 x T=1") == "PASS"          # 105 <= 110
    assert status("SLTT-K (K=1, T=8) step <= 0.6 x BPTT step") == "PASS"  # 2 <= 6
    assert status("bptt_sltt: step <= 1.3 x T x ANN step") == "PASS"      # 1.2
    assert status("bptt_sltt: step <= 1.05 x plain spikingjelly loop") == "PASS"  # 4.8 / 4.7
    assert status("SLTT saved bytes <= 152 MB") == "PASS"                 # 150 MB
    assert status("SLTT step within 5% of the plain spikingjelly loop") == "FAIL"  # 6 / 5
    rows[2]["saved_bytes_peak"] = 120 * 10**6
    assert status("SLTT saved bytes T=8 <= 1.1 x T=1") == "FAIL"
    # a paired measurement (both loops alternating in one process) is preferred for the overhead
    rows.append({**_row("sltt", 6, "paired", step=5.1), "plain_step_s": 5.0})
    bench.add_ratios(rows)
    assert rows[-1]["overhead"] == pytest.approx(1.02)
    assert status("SLTT step within 5% of the plain spikingjelly loop") == "PASS"
    # with per-step times: the median of per-step ratios (a load spike slows both steps of a pair),
    # here 1.01, where the ratio of the two medians would be 2.0 / 1.0
    rows[-1].update(step_s_all=[1.01, 2.02, 4.04], plain_step_s_all=[1.0, 2.0, 4.0], step_s=2.02, plain_step_s=1.0)
    bench.add_ratios(rows)
    assert rows[-1]["overhead"] == pytest.approx(1.01)
    assert all(t["status"] == "NOT MEASURED" for t in bench.evaluate_targets([]))


def test_report_writer(tmp_path: Path) -> None:
    rows = [_row("bptt", 1, model="convnet", step=0.5), _row("bptt", 4, model="convnet", step=1.5),
            _row("bptt", 1, "ann", model="convnet", step=0.4),
            {"method": "sltt", "method_label": "sltt", "model": "convnet", "batch": 16, "T": 4,
             "variant": "method", "error": "exit 1: ConfigError: nope"}]
    bench.add_ratios(rows)
    report = {"machine": bench.machine_info(1), "settings": {}, "load_start": [1.0, 2.0, 3.0], "load_end": None,
              "rows": rows, "targets": bench.evaluate_targets(rows)}
    paths = bench.write_report(report, tmp_path)
    assert {p.name for p in paths} == {"bench.json", "bench.md", "time_vs_T.png", "memory_vs_T.png"}
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["rows"][1]["ann_ratio"] == pytest.approx(1.5 / (4 * 0.4))
    assert data["machine"]["torch"] == torch.__version__
    md = (tmp_path / "bench.md").read_text()
    assert "| bptt | convnet | method | 4 | 16 | 1.500 | 0.94 |" in md
    assert "error: exit 1: ConfigError: nope" in md
    assert "- NOT MEASURED: SLTT saved bytes <= 152 MB" in md
    assert "load average at start/end 1.0 2.0 3.0 / –" in md
    assert (tmp_path / "time_vs_T.png").stat().st_size > 1000
    # --rewrite re-derives ratios from bench.json alone
    data["rows"][1].pop("ann_ratio")
    (tmp_path / "bench.json").write_text(json.dumps(data))
    assert bench.main(["--rewrite", str(tmp_path), "--no-plots"]) == 0
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][1]["ann_ratio"] == pytest.approx(0.9375)


# ---- model.compile -------------------------------------------------------------------------------
def test_model_compile_key_compiles_in_place() -> None:
    cfg = bench.compose_cfg("bptt", "convnet", 2, ["model.compile=true"])
    module = bench.build_module(cfg)
    assert module.net._compiled_call_impl is not None
    assert all(not k.startswith("_orig_mod") for k in module.net.state_dict())  # checkpoints unchanged
    plain = bench.build_module(bench.compose_cfg("bptt", "convnet", 2))
    assert plain.net._compiled_call_impl is None


# ---- end to end ----------------------------------------------------------------------------------
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    rc = bench.main(["--quick", "--variants", "method", "--threads", "1", "--out", str(tmp_path), "--no-plots"])
    assert rc == 0
    (day,) = tmp_path.iterdir()
    data = json.loads((day / "bench.json").read_text())
    (row,) = data["rows"]
    assert not row.get("error"), row
    assert row["variant"] == "method" and row["model"] == "convnet" and row["T"] == 2
    assert row["step_s"] > 0 and len(row["step_s_all"]) == 2
    assert row["saved_bytes_peak"] > row["saved_param_bytes_at_peak"] > 0
    assert row["rss_peak_bytes"] >= row["rss_setup_bytes"] > 0
    assert data["machine"]["load_average"] is not None


# ---- the ANN of every method -----------------------------------------------------------------------
METHODS = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
def test_ann_variant_of_every_method_has_no_spiking_neuron(method: str) -> None:
    from spikeforge.neurons import is_neuron

    cfg, module, _ = bench.variant_module(method, "convnet", 1, "ann")
    assert cfg.method.neuron.kind == "relu" and module.T == 1
    assert not any(is_neuron(m) for m in module.net.modules())
    assert any(isinstance(m, nn.ReLU) for m in module.net.modules())
    snn_cfg, snn, _ = bench.variant_module(method, "convnet", 2, "method")
    if snn_cfg.method.neuron.kind != "relu":  # dsr_ann is already the ANN (DSR hybrid step 1)
        assert any(is_neuron(m) for m in snn.net.modules())

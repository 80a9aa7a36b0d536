"""The GPU-facing options on CPU (docs/performance.md "GPU"): ``model.channels_last``, ``model.compile`` for every
method, and the GPU check's refusal without CUDA and its CPU rehearsal (``--dry-run``)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_cfg

from spikeforge.neurons import backend
from spikeforge.run import build_module, train

TINY = ["data.image_size=8", "model.channels=[8,16]", "model.pool_size=1", "T=2", "data.batch_size=16",
        "test=false", "inference_cost=false"]
ALL_METHODS = ["bptt", "sltt", "sltt_k", "stbp_tdbn", "stds", "asgl", "dsr"]


def test_channels_last_model_gives_the_same_outputs_and_gradients(tmp_path: Path) -> None:
    torch.manual_seed(0)  # the same weights and input on every run
    base = compose_cfg(["method=bptt", *TINY], tmp_path / "a")
    nhwc = compose_cfg(["method=bptt", *TINY, "model.channels_last=true"], tmp_path / "b")
    m0, m1 = build_module(base), build_module(nhwc)
    m1.load_state_dict(m0.state_dict())
    convs = [m.weight for m in m1.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not m0.channels_last and m1.channels_last
    x = torch.rand(4, 3, 8, 8)
    assert m1.encode(x)[0].is_contiguous(memory_format=torch.channels_last)  # each step NHWC
    outs = []
    for m in (m0, m1):
        out = m(x)
        out.sum().backward()
        outs.append((out, [p.grad for p in m.net.parameters()]))
    # NHWC sums the pool and the norm's statistics in another order: outputs and gradients agree to a few
    # float32 roundings (seen: 1.8e-6 on gradients of order 1e-3)
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=5e-6)
    for g1, g0 in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=5e-6)


def _fit_compiled(method: str, tmp_path: Path, compile_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.compile=true``: compose, one training step through ``spikeforge.run.train``."""
    original = torch.nn.Module.compile
    compiled: list[torch.nn.Module] = []

    def compile_with(self: torch.nn.Module, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("backend", compile_backend)
        compiled.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_with)
    torch._dynamo.reset()
    cfg = compose_cfg([f"method={method}", *TINY, "model.compile=true", "++trainer.fast_dev_run=true",
                       "logger=csv", "~callbacks.progress_bar", "~callbacks.model_summary"], tmp_path / "run")
    train(cfg)
    torch._dynamo.reset()
    assert len(compiled) == 1 and compiled[0]._compiled_call_impl is not None  # the network, compiled


# Fast: BPTT, the graph as torch.compile captures it (Dynamo + AOTAutograd) without code generation.
def test_compile_one_step_bptt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit_compiled("bptt", tmp_path, "aot_eager", monkeypatch)


# Slow: every method with Inductor (minutes of C++ compilation per method on a small CPU).
@pytest.mark.slow
@pytest.mark.parametrize("method", ALL_METHODS)
def test_compile_one_step_every_method(method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fit_compiled(method, tmp_path, "inductor", monkeypatch)


# ---- scripts/gpu_check ------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), "PY": sys.executable})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stderr.strip().startswith("gpu_check: no CUDA device visible")
    assert not (tmp_path / "out").exists()


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _dry_run(methods: list[str], precisions: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    # the rehearsal sets the fused path's compile backend: keep it to this test
    monkeypatch.setattr(backend, "COMPILE_OPTIONS", dict(backend.COMPILE_OPTIONS))
    monkeypatch.setattr(backend, "_COMPILED", {})
    rc = _gpu_check_module().main(["--dry-run", "--out", str(tmp_path), "--methods", *methods,
                                   "--precisions", *precisions])
    torch._dynamo.reset()
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").is_file()
    assert [(r["method"], r["precision"]) for r in report["train"]] == [(m, p) for m in methods for p in precisions]
    for row in report["train"]:
        assert row["steps_seen"] == 1 and len(row["losses"]) == 1 and math.isfinite(row["losses"][0]), row
        assert row["failed"] == [], row
    assert [r["kind"] for r in report["neurons"]] == ["stbp_lif", "sltt_lif", "asgl_lif", "dsr_if", "dsr_lif",
                                                      "lif", "if"]
    for row in report["neurons"]:
        assert row["failed"] == [] and row["max_rel_err"] <= 1e-5, row
    assert rc == 0
    return report


def test_gpu_check_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dry_run(["bptt"], ["bf16-mixed"], tmp_path, monkeypatch)


@pytest.mark.slow
def test_gpu_check_dry_run_every_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _dry_run(["bptt", "sltt", "stbp_tdbn", "stds", "asgl", "dsr"], ["16-mixed", "bf16-mixed"], tmp_path, monkeypatch)

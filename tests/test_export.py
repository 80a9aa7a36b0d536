"""``src/export.py``: NIR, TorchScript and ONNX exports of a trained network, each read back and compared
with the PyTorch network; neurons NIR cannot express stop with one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg
from infra_utils import ROOT, TINY, env

from spikeforge.errors import ExportError
from spikeforge.export import export, export_nir, export_onnx, export_torchscript
from spikeforge.run import build_module, train

# a tiny convnet that fires (T 4, lr 0.02) trained for one short epoch
TRAIN = [*TINY, "T=4", "method.optimizer.lr=0.02", "trainer.max_epochs=1", "trainer.limit_train_batches=12",
         "trainer.limit_val_batches=2", "test=false", "inference_cost=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "run"
    train(compose_cfg(TRAIN, out))
    return out / "checkpoints" / "last.ckpt"


def _export(ckpt: Path, fmt: str, out: Path) -> dict:
    return export(compose_cfg([f"ckpt_path={ckpt}", f"format={fmt}", "num_samples=8"], out, config_name="export"))


def test_nir_export_reloads_with_nir_and_reproduces_the_spikes(trained: Path, tmp_path: Path) -> None:
    import nir

    results = _export(trained, "nir", tmp_path / "nir")
    check = results["check"]
    graph = nir.read(results["file"])  # the file as any NIR tool reads it
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine"} <= kinds and "BatchNorm" not in str(kinds)
    lif = next(n for n in graph.nodes.values() if isinstance(n, nir.LIF))
    assert lif.tau.flat[0] == pytest.approx(2.0 * 1e-4) and lif.v_threshold.flat[0] == 1.0  # τ·dt, V_th
    assert check["spikes_fired"] > 0 and check["spike_mismatches"] == 0  # a network that fires, equal spikes
    assert check["max_abs_diff"] <= check["atol"] == 1e-5
    assert check["predictions_equal_unfolded"] and check["time_steps"] == 4
    saved = json.loads((tmp_path / "nir" / "export_results.json").read_text())
    assert saved["file"] == str(tmp_path / "nir" / "model.nir") and saved["input_shape"] == [8, 3, 8, 8]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_torchscript_and_onnx_round_trips(trained: Path, tmp_path: Path, fmt: str) -> None:
    results = _export(trained, fmt, tmp_path / fmt)
    assert Path(results["file"]).is_file()
    readme = {"torchscript": 1e-6, "onnx": 1e-4}[fmt]  # README's table, not what the exporter says of itself
    assert results["check"]["max_abs_diff"] <= readme and results["check"]["predictions_equal"]


def _module(tmp_path: Path, method: str):
    """An untrained module with non-trivial BN/tdBN running statistics (what folding has to get right)."""
    module = build_module(compose_cfg([*TINY, f"method={method}", "T=4"], tmp_path / method)).eval()
    gen = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return module


@pytest.mark.parametrize("method", ["stbp_tdbn", "asgl"])
def test_nir_maps_stbp_and_asgl_neurons_and_folds_tdbn(tmp_path: Path, method: str) -> None:
    module = _module(tmp_path, method)
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 4
    check = export_nir(module, x, tmp_path / "m.nir", method)
    assert check["spikes_fired"] > 0 and check["spike_mismatches"] == 0
    assert check["max_abs_diff_vs_unfolded"] < 1e-4


NOT_NIR = [("sltt", r"reset by subtraction \(v_reset"), ("dsr", "reset by subtraction and a trainable")]


@pytest.mark.parametrize(("method", "why"), NOT_NIR)
def test_neurons_nir_cannot_express_name_the_layers_and_an_alternative(tmp_path: Path, method: str,
                                                                       why: str) -> None:
    module = _module(tmp_path, method)
    with pytest.raises(ExportError, match=rf"NIR cannot express the \w+ neurons of this network \(features\.3, "
                                          rf"features\.7: [^)]*{why}.*nearest exportable: .*method=bptt"):
        export_nir(module, torch.rand(2, 3, 8, 8), tmp_path / "m.nir", method)
    assert not (tmp_path / "m.nir").exists()


def test_export_cli_writes_the_file_and_a_bad_format_is_named(trained: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "src" / "export.py"), *args], cwd=ROOT, env=env(),
                              capture_output=True, text=True, timeout=300)

    ok = cli(f"ckpt_path={trained}", "format=torchscript", f"hydra.run.dir={tmp_path / 'ts'}")
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    assert (tmp_path / "ts" / "model.pt").is_file() and (tmp_path / "ts" / "export_results.json").is_file()
    with pytest.raises(ExportError, match="format=tflite is not an export format; choose one of: nir, "):
        _export(trained, "tflite", tmp_path / "bad")


def test_stbp_network_goes_to_onnx_and_torchscript_names_what_it_cannot_trace(tmp_path: Path) -> None:
    module = _module(tmp_path, "stbp_tdbn")
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ExportError, match=r"TorchScript cannot hold StrictSpike .*use format=onnx"):
        export_torchscript(module, x, tmp_path / "m.pt")
    assert export_onnx(module, x, tmp_path / "m.onnx")["max_abs_diff"] <= 1e-4

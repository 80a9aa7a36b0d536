"""Model zoo: parameter counts, every model × every neuron kind (multi- and single-step), the papers'
specific pieces (scaled WS, SEW connect functions, static stem, dropout over T, inits), input checks,
and training runs on the embedded digits data."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from spikingjelly.activation_based import functional
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based.model import sew_resnet as sj_sew
from spikingjelly.activation_based.model import spiking_resnet as sj_spiking

from spikeforge.errors import ConfigError
from spikeforge.layers import build_norm, list_norms, norm_factory
from spikeforge.models import MODELS, build_model, list_models
from spikeforge.models._utils import dropout_layer
from spikeforge.models.nf_resnet import ws_conv
from spikeforge.models.sew_resnet import connect
from spikeforge.neurons import build_neuron, list_neurons, neuron_factory

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
LIF = neuron_factory("lif")
BN = norm_factory("bn")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---- parameter counts (docs/models.md table / method specs) -----------------------------------------
PARAM_COUNTS = [
    ("convnet", 10, 3, {}, 26_266),  # default 16/32/64 channels
    ("sew_resnet18", 1000, 3, {}, 11_689_512),  # stds.md / SEW reference (= torchvision resnet18)
    ("sew_resnet34", 1000, 3, {}, 21_797_672),  # = torchvision resnet34
    ("sew_resnet50", 1000, 3, {}, 25_557_032),  # = torchvision resnet50
    ("spiking_resnet18", 1000, 3, {}, 11_689_512),
    ("spiking_resnet34", 1000, 3, {}, 21_797_672),
    ("preact_spiking_resnet18", 10, 3, {}, 11_176_906),  # sltt.md, SLTT head
    ("preact_spiking_resnet18", 10, 3, {"head": "dsr"}, 11_176_906 + 2 * 10),  # + BatchNorm1d(10)
    # dsr.md ImageNet: 7×7 stem, BN1d(1000) after the Linear
    ("preact_spiking_resnet18_imagenet", 1000, 3, {}, 11_691_640),
    ("resnet18", 10, 3, {}, 11_173_962),  # ASGL
    ("resnet19", 10, 3, {}, 12_697_994),  # stbp_tdbn.md
    ("spiking_vgg11_bn", 10, 2, {}, 9_476_298),  # sltt.md
    ("spiking_vgg11_bn", 10, 2, {"head": "dsr"}, 9_476_298 + 2 * 10),
    ("vggsnn", 10, 2, {}, 9_268_736),  # ASGL VGGSNN2
    # torchvision's ResNet + one skip-init gain per block (WS gain + bias replace BN's affine pair)
    ("nf_resnet34", 1000, 3, {}, 21_797_688),  # sltt.md; 16 blocks
    ("nf_resnet50", 1000, 3, {}, 25_557_048),  # 16 blocks
    ("nf_resnet101", 1000, 3, {}, 44_549_193),  # 33 blocks
    # 3→256 conv, 5 × 256→256 convs, 6 BNs, fc 16384→2048 and 2048→100 (1×1 convs, no bias)
    ("stds_cifarnet", 10, 3, {}, 3 * 256 * 9 + 5 * 256 * 256 * 9 + 6 * 2 * 256 + 16384 * 2048 + 2048 * 100),
]


@pytest.mark.parametrize(("name", "classes", "channels", "kw", "expected"), PARAM_COUNTS,
                         ids=[f"{v[0]}{'-' + '-'.join(map(str, v[3].values())) if v[3] else ''}"
                              for v in (getattr(p, "values", p) for p in PARAM_COUNTS)])
def test_parameter_counts(name: str, classes: int, channels: int, kw: dict, expected: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(name, classes, channels, neuron=LIF, norm=BN, **kw)
    assert n_params(model) == expected


def test_every_model_has_a_parameter_count() -> None:
    assert {p[0] for p in PARAM_COUNTS} == set(list_models())


@pytest.mark.parametrize("name", [
    "spiking_resnet18",
    pytest.param("spiking_resnet34", marks=pytest.mark.slow),
    pytest.param("sew_resnet34", marks=pytest.mark.slow),
    pytest.param("sew_resnet50", marks=pytest.mark.slow),
])
def test_plain_and_sew_resnets_match_torchvision_counts(name: str) -> None:
    """Neurons add no parameters: the spiking ResNets have torchvision's parameter count."""
    from torchvision import models as tv

    theirs = getattr(tv, name.replace("spiking_", "").replace("sew_", ""))()
    assert n_params(build_model(name, 1000, neuron=LIF, norm=BN)) == n_params(theirs)


@pytest.mark.slow
def test_nf_resnet_50_101_counts() -> None:
    """WS gain + bias per output channel replace BN's affine pair; one skip-init gain per block."""
    from torchvision import models as tv

    for ours, theirs, blocks in [("nf_resnet50", tv.resnet50, 16), ("nf_resnet101", tv.resnet101, 33)]:
        assert n_params(build_model(ours, 1000, neuron=LIF, norm=BN)) == n_params(theirs()) + blocks


@pytest.mark.parametrize(("ours", "theirs"), [("sew_resnet18", sj_sew.sew_resnet18),
                                             ("spiking_resnet18", sj_spiking.spiking_resnet18)])
def test_resnets_match_spikingjelly(ours: str, theirs) -> None:
    """Same layer names and shapes as spikingjelly's SEW / spiking ResNet-18 (its checkpoints load
    strictly) and the same multi-step outputs (training-mode BN); the SEW static stem equals feeding
    the repeated image."""
    torch.manual_seed(0)
    kw = {"cnf": "ADD"} if ours.startswith("sew") else {}
    ref = theirs(spiking_neuron=sj_neuron.IFNode, num_classes=10, **kw)
    functional.set_step_mode(ref, "m")
    model = build_model(ours, 10, neuron=neuron_factory("if"), norm=BN, **({"T": 2} if "sew" in ours else {}))
    model.load_state_dict(ref.state_dict())
    image = torch.rand(2, 3, 32, 32)
    x = image.unsqueeze(0).repeat(2, 1, 1, 1, 1)  # direct encoding, T = 2
    with torch.no_grad():
        expected = ref(x)
        assert not torch.allclose(expected[:, 0], expected[:, 1])  # spikes reached the classifier
        torch.testing.assert_close(model(x), expected)
        functional.reset_net(model)
        if ours.startswith("sew"):
            torch.testing.assert_close(model(image), expected)


# ---- every model × every neuron kind -------------------------------------------------------------
# Reduced widths and the smallest inputs each model accepts keep this fast; the architecture (layer
# graph, strides, heads, step modes) is the one the full-width model uses.
# id → (model, in_channels, input size, kwargs)
SMALL: dict[str, tuple[str, int, int, dict]] = {
    "convnet": ("convnet", 3, 8, {"channels": [4, 8]}),
    "stds_cifarnet": ("stds_cifarnet", 3, 32, {"channels": 4, "hidden": 16, "T": 2}),
    "sew_resnet18": ("sew_resnet18", 3, 16, {"width": 4, "T": 2}),
    "sew_resnet18-cifar-iand": ("sew_resnet18", 3, 8, {"width": 4, "T": 2, "stem": "cifar", "connect_f": "IAND"}),
    "sew_resnet34": ("sew_resnet34", 3, 16, {"width": 4, "T": 2}),
    "sew_resnet50-and": ("sew_resnet50", 3, 16, {"width": 4, "T": 2, "connect_f": "AND"}),
    "spiking_resnet18": ("spiking_resnet18", 3, 16, {"width": 4}),
    "spiking_resnet18-cifar": ("spiking_resnet18", 3, 8, {"width": 4, "stem": "cifar"}),
    "spiking_resnet34": ("spiking_resnet34", 3, 16, {"width": 4}),
    "preact_spiking_resnet18": ("preact_spiking_resnet18", 3, 8, {"width": 4, "dropout": 0.2}),
    "preact_spiking_resnet18-dsr": ("preact_spiking_resnet18", 3, 8,
                                    {"width": 4, "head": "dsr", "dropout": 0.2, "dropout_per_step": True}),
    "resnet18": ("resnet18", 3, 8, {"width": 4}),
    "resnet19": ("resnet19", 3, 8, {"width": 8, "hidden": 16}),
    "spiking_vgg11_bn": ("spiking_vgg11_bn", 2, 32, {"width": 4, "dropout": 0.3}),
    "spiking_vgg11_bn-dsr": ("spiking_vgg11_bn", 2, 32,
                             {"width": 4, "head": "dsr", "dropout": 0.1, "dropout_per_step": True}),
    "vggsnn": ("vggsnn", 2, 48, {"width": 4}),
    "nf_resnet34": ("nf_resnet34", 3, 16, {"width": 4}),
    "nf_resnet50": ("nf_resnet50", 3, 16, {"width": 4}),
    "nf_resnet101": ("nf_resnet101", 3, 16, {"width": 4}),
}
T, N, C = 2, 2, 5



def _default_case(name: str) -> tuple[str, int, int, dict]:
    """A model registered elsewhere without a row above: 3×32×32 input, small width when it has one."""
    params = inspect.signature(MODELS.get(name)).parameters
    return name, 3, 32, {k: v for k, v in (("width", 8), ("T", T)) if k in params}


SMALL.update({name: _default_case(name) for name in list_models() if name not in {v[0] for v in SMALL.values()}})


def test_small_cases_name_registered_models() -> None:
    assert {v[0] for v in SMALL.values()} <= set(list_models())


# DSR's neurons differentiate the firing rate over all T steps at once (dsr.md): multi-step only, and
# single-step mode is refused (test_multi_step_only_neurons_refuse_single_step). Every other kind must
# run single-step; a failure there fails the test.
MULTI_STEP_ONLY = {"dsr_if", "dsr_lif"}


def test_multi_step_only_neurons_refuse_single_step() -> None:
    assert set(list_neurons()) >= MULTI_STEP_ONLY
    for kind in MULTI_STEP_ONLY:
        with pytest.raises(ConfigError, match="single-step"):
            build_neuron(kind, step_mode="s")(torch.zeros(2, 3))


def _first_grad(model: torch.nn.Module) -> torch.Tensor:
    p = next(p for p in model.parameters() if p.requires_grad)
    assert p.grad is not None
    return p.grad


# LIF only in the fast suite (other kinds: slow): depth 50/101, and the stem/connect-function variants
# (the same blocks as their base case with another stem).
LIF_ONLY = {"sew_resnet50-and", "nf_resnet50", "nf_resnet101", "sew_resnet18-cifar-iand", "spiking_resnet18-cifar"}
SWEEP = [pytest.param(case, kind, id=f"{case}-{kind}",
                      marks=[pytest.mark.slow] if case in LIF_ONLY and kind != "lif" else [])
         for case in SMALL for kind in list_neurons()]


@pytest.mark.parametrize(("case", "kind"), SWEEP)
def test_forward_backward_every_neuron(case: str, kind: str) -> None:
    name, channels, size, kw = SMALL[case]
    torch.manual_seed(0)
    model = build_model(name, C, channels, neuron=neuron_factory(kind), norm=BN, **kw)
    x = torch.rand(T, N, channels, size, size)

    out = model(x)  # multi-step, time-major input
    assert out.shape == (T, N, C)
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(_first_grad(model)).all()
    functional.reset_net(model)

    if getattr(model, "static_input", False):  # the static image, repeated over T inside the model
        out = model(x[0])
        assert out.shape == (T, N, C)
        functional.reset_net(model)

    if kind in MULTI_STEP_ONLY:
        return
    model.zero_grad()
    functional.set_step_mode(model, "s")
    outs = [model(x[t]) for t in range(T)]
    assert all(o.shape == (N, C) for o in outs)
    torch.stack(outs).float().sum().backward()
    assert torch.isfinite(_first_grad(model)).all()
    functional.reset_net(model)


NORM_SWEEP = [pytest.param(case, kind, id=f"{case}-{kind}") for case in SMALL if case not in LIF_ONLY
              for kind in list_norms() if kind != "bn"]  # bn: the neuron sweep above


@pytest.mark.parametrize(("case", "kind"), NORM_SWEEP)
def test_forward_backward_every_norm(case: str, kind: str) -> None:
    """Every model with every norm kind (multi-step); NF-ResNets ignore the norm."""
    name, channels, size, kw = SMALL[case]
    model = build_model(name, C, channels, neuron=LIF, norm=norm_factory(kind), **kw)
    out = model(torch.rand(T, N, channels, size, size))
    assert out.shape == (T, N, C)
    out.sum().backward()
    assert torch.isfinite(_first_grad(model)).all()


# the smallest input each model accepts at its real width: (channels, size); ImageNet stems (7×7/2 conv and
# pool) take 16×16, CIFAR stems 8×8
FULL_WIDTH_INPUT = {"vggsnn": (2, 48), "stds_cifarnet": (3, 32), "spiking_vgg11_bn": (2, 32)}
IMAGENET_STEMS = ("sew_resnet", "spiking_resnet", "nf_resnet", "preact_spiking_resnet18_imagenet")


def _full_width_case(name: str, T: int, size: int | None = None) -> tuple[torch.nn.Module, torch.Tensor]:
    channels, smallest = FULL_WIDTH_INPUT.get(name, (3, 16 if name.startswith(IMAGENET_STEMS) else 8))
    static = "T" in inspect.signature(MODELS.get(name)).parameters  # repeats the image over T itself
    model = build_model(name, C, channels, neuron=LIF, norm=BN, **({"T": T} if static else {}))
    return model, torch.rand(T, 2, channels, size or smallest, size or smallest)


@pytest.mark.parametrize("name", sorted(list_models()))
def test_full_width_forward_and_backward(name: str) -> None:
    """Every model at the papers' width (its default), one small batch at the smallest input it takes, T = 1:
    multi-step forward and backward with a finite gradient for every parameter, then single-step."""
    torch.manual_seed(0)
    model, x = _full_width_case(name, T=1)
    out = model(x)
    assert out.shape == (1, 2, C) and torch.isfinite(out).all()
    out.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    functional.reset_net(model)
    functional.set_step_mode(model, "s")
    with torch.no_grad():
        assert model(x[0]).shape == (2, C)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(list_models()) - {"convnet"}))
def test_full_width_forward_and_backward_64px_T2(name: str) -> None:
    """The full version: 64×64 inputs (48×48 DVS, 32×32 for stds_cifarnet), T = 2, both step modes."""
    size = {"vggsnn": 48, "stds_cifarnet": 32, "spiking_vgg11_bn": 48}.get(name, 64)
    model, x = _full_width_case(name, T=2, size=size)
    out = model(x)
    out.sum().backward()
    assert out.shape == (2, 2, C)
    functional.reset_net(model)
    functional.set_step_mode(model, "s")
    assert model(x[0]).shape == (2, C)


# ---- the papers' specific pieces ---------------------------------------------------------------
def test_scaled_weight_standardisation_numbers() -> None:
    """sltt.md item 5: W (2,1,2,2) rows [1,2,3,4] and [.5,−.5,0,1], gain 1."""
    conv = ws_conv(1, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2, 3, 4], [0.5, -0.5, 0, 1]]).view(2, 1, 2, 2))
    expected = torch.tensor([[-0.580943, -0.193648, 0.193648, 0.580943], [0.193643, -0.580930, -0.193643, 0.580930]])
    torch.testing.assert_close(conv.get_weight().view(2, 4), expected, atol=1e-5, rtol=0)


def test_nf_resnet_init_and_no_norm() -> None:
    model = build_model("nf_resnet34", 10, neuron=LIF, norm=BN, width=8)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert torch.count_nonzero(model.fc.weight) == 0
    gains = [m.skipinit_gain for m in model.modules() if hasattr(m, "skipinit_gain")]
    assert len(gains) == 16 and all(g.item() == 0 for g in gains)
    # β = sqrt(expected variance): 1, then +α² per block, 1 + α² again after a downsampling block
    betas = [round(b.beta**2, 6) for b in model.layer1] + [round(b.beta**2, 6) for b in model.layer2]
    assert betas == [1.0, 1.04, 1.08, 1.12, 1.04, 1.08, 1.12]


def test_sew_connect_functions() -> None:
    out, ident = torch.tensor([0.0, 0, 1, 1]), torch.tensor([0.0, 1, 0, 1])
    assert connect(out, ident, "ADD").tolist() == [0, 1, 1, 2]
    assert connect(out, ident, "AND").tolist() == [0, 0, 0, 1]
    assert connect(out, ident, "IAND").tolist() == [0, 1, 0, 0]  # identity · (1 − out)


def test_stds_cifarnet_static_stem_equals_repeated_input() -> None:
    torch.manual_seed(0)
    # ReLU in the neuron slot keeps the small random net from being silent (a trivial 0 == 0)
    model = build_model("stds_cifarnet", C, neuron=neuron_factory("relu"), norm=BN, T=3, channels=8, hidden=64,
                        dropout=0.0)
    image = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        static = model(image)
        functional.reset_net(model)
        repeated = model(image.unsqueeze(0).repeat(3, 1, 1, 1, 1))
    assert static.shape == (3, 4, C) and static.sum() > 0
    torch.testing.assert_close(static, repeated)


def test_static_model_needs_T_for_static_images() -> None:
    model = build_model("sew_resnet18", C, neuron=LIF, norm=BN, width=4)
    with pytest.raises(ConfigError, match="T"):
        model(torch.rand(N, 3, 16, 16))


def test_dropout_mask_shared_over_T_or_per_step() -> None:
    torch.manual_seed(0)
    x = torch.ones(4, 3, 200)
    shared, fresh = dropout_layer(0.5), dropout_layer(0.5, per_step=True)
    for m in (shared, fresh):
        functional.set_step_mode(m, "m")
    ys, yf = shared(x), fresh(x)
    assert all(torch.equal(ys[0], ys[t]) for t in range(4))
    assert not torch.equal(yf[0], yf[1])
    # single-step (SLTT): the shared mask persists over steps until reset_net
    functional.reset_net(shared)
    functional.set_step_mode(shared, "s")
    functional.set_step_mode(fresh, "s")
    assert torch.equal(shared(x[0]), shared(x[1]))
    assert not torch.equal(fresh(x[0]), fresh(x[1]))
    assert isinstance(dropout_layer(0.0), torch.nn.Identity)


class RecordingNorm:
    """A norm factory that records the ``alpha`` each norm is built with."""

    def __init__(self) -> None:
        self.alphas: list[float] = []

    def __call__(self, num_features: int, alpha: float = 1.0) -> torch.nn.Module:
        self.alphas.append(alpha)
        return build_norm("bn", num_features)


@pytest.mark.parametrize(("name", "residual_norms"), [("resnet19", 8 + 2), ("resnet18", 8 + 3),
                                                      ("spiking_resnet34", 16 + 3), ("sew_resnet18", 0)])
def test_residual_branch_norms_get_alpha(name: str, residual_norms: int) -> None:
    """α = 1/√2 on the last norm of each block and the shortcut norm (stbp_tdbn.md); SEW adds spikes."""
    norm = RecordingNorm()
    build_model(name, C, neuron=LIF, norm=norm, width=4)  # type: ignore[arg-type]
    assert sum(math.isclose(a, 1 / math.sqrt(2)) for a in norm.alphas) == residual_norms
    assert all(a == 1.0 or math.isclose(a, 1 / math.sqrt(2)) for a in norm.alphas)


def test_paper_initialisations() -> None:
    torch.manual_seed(0)
    vggsnn = build_model("vggsnn", 10, 2, neuron=LIF, norm=BN)
    assert vggsnn.classifier.bias is None
    assert abs(vggsnn.classifier.weight.std().item() - 0.5) < 0.01  # asgl.md: N(0, 0.5)
    vgg11 = build_model("spiking_vgg11_bn", 10, 2, neuron=LIF, norm=BN)
    assert abs(vgg11.fc.weight.std().item() - 0.01) < 0.001 and torch.count_nonzero(vgg11.fc.bias) == 0
    preact = build_model("preact_spiking_resnet18", 10, neuron=LIF, norm=BN, width=8)
    assert torch.count_nonzero(preact.linear.bias) == 0
    conv = preact.layer1[0].conv1.weight  # Kaiming normal, fan_out: std = sqrt(2 / (C_out · 9))
    assert abs(conv.std().item() - math.sqrt(2 / (8 * 9))) < 0.03


def test_sew_zero_init_residual() -> None:
    model = build_model("sew_resnet18", C, neuron=LIF, norm=BN, width=4, connect_f="AND", zero_init_residual=True)
    bn = model.layer1[0].bn2
    assert torch.count_nonzero(bn.weight) == 0 and torch.all(bn.bias == 1)


# ---- configuration errors ----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "channels", "size", "kw"), [
    ("vggsnn", 2, 32, {"width": 4}),
    ("stds_cifarnet", 3, 48, {"channels": 4, "hidden": 8, "T": 2}),
    ("spiking_vgg11_bn", 2, 16, {"width": 4}),
])
def test_wrong_input_size_is_a_config_error(name: str, channels: int, size: int, kw: dict) -> None:
    model = build_model(name, C, channels, neuron=LIF, norm=BN, **kw)
    with pytest.raises(ConfigError, match=f"{size}×{size}"):
        model(torch.rand(T, N, channels, size, size))


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("sew_resnet18", {"stem": "mnist"}, "imagenet, cifar"),
    ("spiking_resnet18", {"stem": "dvs"}, "imagenet, cifar"),
    ("sew_resnet18", {"connect_f": "OR"}, "ADD, AND, IAND"),
    ("preact_spiking_resnet18", {"head": "rate"}, "linear, dsr"),
    ("spiking_vgg11_bn", {"head": "x"}, "linear, dsr"),
    ("spiking_vgg11_bn", {"dropout": 1.0}, "dropout"),
    ("resnet18", {"width": 0}, "width"),
    ("resnet18", {"depth": 3}, "resnet18"),
])
def test_bad_model_options_fail_at_construction(name: str, kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(name, C, neuron=LIF, norm=BN, **kw)


# ---- training on the embedded digits data ------------------------------------------------------
def _compose(tmp_path: Path, overrides: list[str]) -> DictConfig:
    os.environ.setdefault("SPIKEFORGE_ROOT", str(ROOT))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "data=digits", "++trainer.fast_dev_run=true", "data.batch_size=4",
            "T=2", *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.log_dir = str(tmp_path)
    return cfg


# Every model whose receptive field fits the 3×32×32 digits; vggsnn needs 48×48 (2-channel) frames.
DIGITS_RUNS = {name: [] for name in list_models() if name != "vggsnn"}
DIGITS_RUNS["vggsnn"] = ["data.image_size=48", "data.channels=2"]


@pytest.mark.parametrize(("name", "extra"), [
    ("preact_spiking_resnet18", ["model.width=8", "model.head=dsr", "model.dropout=0.2"]),
    ("stds_cifarnet", ["model.channels=8", "model.hidden=32"]),
])
def test_train_fast_dev_run_on_digits(tmp_path: Path, name: str, extra: list[str]) -> None:
    from spikeforge.run import train

    results = train(_compose(tmp_path, [f"model={name}", *extra]))
    assert results["model"] == name and 0.0 <= results["test"]["test/acc1"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DIGITS_RUNS))
def test_train_fast_dev_run_every_model(tmp_path: Path, name: str) -> None:
    from spikeforge.run import train

    results = train(_compose(tmp_path, [f"model={name}", *DIGITS_RUNS[name]]))
    assert results["model"] == name and results["parameters"] > 0

"""Paper protocols: each recipe feeds and evaluates the data the way its paper's code did.

On the fake datasets (genuine on-disk formats, ``spikeforge.data.fakes``): the statistics of the
originals' augmentations (torchtoolbox Cutout as SLTT applies it, the uint8 wrap-around of SLTT's and
ASGL's CIFAR10-DVS frames, ASGL's flip + roll), every recipe composing to its paper's choices, and
``protocol=paper`` training on every training sample and testing after every epoch.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import CIFAR_AUG_OFF, ROOT, compose_cfg, fake_cifar_root
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from sklearn.datasets import load_digits
from torchvision import transforms as T

from spikeforge.data.base import stratified_split
from spikeforge.data.cifar import CIFAR10DataModule, Cutout, RandomErasingCutout
from spikeforge.data.dvs import CIFAR10DVSDataModule, FrameTransform, uint8_wrap
from spikeforge.data.fakes import write_cifar10_dvs_events
from spikeforge.errors import ConfigError
from spikeforge.protocol import apply_protocol

OFF = CIFAR_AUG_OFF


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_cifar_root(tmp_path_factory, "cifar10", train_per_class=10, test_per_class=1)


@pytest.fixture(scope="module")
def c10dvs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CIFAR10-DVS events_np tree with enough events per frame that some pixels count 2 or more."""
    root = tmp_path_factory.mktemp("c10dvs")
    write_cifar10_dvs_events(root, per_class=2, events=12_000, seed=0)
    return root


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


# ---- Cutout ---------------------------------------------------------------------------------------
def _hole_boxes(dm: CIFAR10DataModule, draws: int) -> tuple[int, list[tuple[int, int, torch.Tensor]]]:
    """Apply the training transform ``draws`` times; (images changed, [(h, w, hole pixels)] per change)."""
    to_tensor = T.ToTensor()
    changed, holes = 0, []
    n = len(dm.train_set)
    for k in range(draws):
        out = dm.train_set[k % n][0]
        ref = to_tensor(dm.train_set.base[int(dm.train_set.indices[k % n])][0])
        diff = (out != ref).any(0)
        if not diff.any():
            continue
        changed += 1
        rows, cols = diff.nonzero(as_tuple=True)
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        holes.append((r1 - r0, c1 - c0, out[:, r0:r1, c0:c1]))
    return changed, holes


def _torchtoolbox_areas(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """Hole area fractions of torchtoolbox 0.1.8.2's ``Cutout.get_params`` defaults, simulated with numpy."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.02, 0.4, n) * side * side
    r = rng.uniform(0.4, 1 / 0.4, n)
    return np.floor(np.sqrt(s / r)) * np.floor(np.sqrt(s * r)) / (side * side)


def test_random_erasing_cutout_hits_half_the_images_with_torchtoolbox_holes(cifar10_root: Path) -> None:
    dm = CIFAR10DataModule(root=str(cifar10_root), verify_checksums=False, val_fraction=0.0, augment=OFF,
                           normalize=False, cutout={"kind": "random_erasing_like"})
    dm.setup()
    torch.manual_seed(0)
    draws = 400
    changed, holes = _hole_boxes(dm, draws)
    # p = 0.5: 400 draws give 200 ± 10 (one sigma)
    assert 0.42 < changed / draws < 0.58, changed
    areas = np.array([h * w / 1024 for h, w, _ in holes])
    assert areas.min() >= 0.012 and areas.max() <= 0.4  # int() truncation: 2×7 px at s = 0.02, r = 2.5
    ref = _torchtoolbox_areas(20_000)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(areas, q) - np.quantile(ref, q)) < 0.04, (q, np.quantile(areas, q))
    aspect = np.array([h / w for h, w, _ in holes])
    assert (aspect > 1.5).any() and (aspect < 1 / 1.5).any() and aspect.min() > 0.3 and aspect.max() < 3.5
    # one fill value per hole, written by PIL's paste of an int into RGB: (v, 0, 0)
    fills = set()
    for _, _, patch in holes:
        assert torch.equal(patch[1:], torch.zeros_like(patch[1:]))
        assert torch.equal(patch[0], torch.full_like(patch[0], float(patch[0, 0, 0])))
        fills.add(round(float(patch[0, 0, 0]) * 255))
    assert len(fills) > 0.8 * len(holes) * (1 - len(holes) / 512)


def test_random_erasing_cutout_checks_its_settings() -> None:
    with pytest.raises(ConfigError, match=r"data\.cutout\.p"):
        RandomErasingCutout(p=1.5)
    with pytest.raises(ConfigError, match=r"data\.cutout\.kind"):
        CIFAR10DataModule(root="/nonexistent", cutout={"kind": "square"})
    with pytest.raises(ConfigError, match=r"data\.cutout\.kind"):
        CIFAR10DataModule(root="/nonexistent", augment={"cutout": True})


# ---- CIFAR10-DVS frames ---------------------------------------------------------------------------
def _c10dvs(root: Path, **kw) -> CIFAR10DVSDataModule:
    kw = {"frames": 2, "size": 48, "batch_size": 4, "val_fraction": 0.0, "progress": False,
          "augment": {"crop": False, "flip": False, "roll": False}, **kw}
    dm = CIFAR10DVSDataModule(root=str(root), **kw)
    dm.prepare_data()
    dm.setup()
    return dm


def test_uint8_wrap_frames_are_what_topilimage_makes_of_the_counts(c10dvs_root: Path) -> None:
    dm = _c10dvs(c10dvs_root, frame_values="uint8_wrap")
    i = int(dm.test_set.indices[0])
    counts = np.asarray(dm.test_set.base[i][0], dtype=np.float32)
    assert counts.shape == (2, 2, 128, 128) and counts.max() >= 2  # the wrap shows only for counts > 1
    # before resizing: ToPILImage computes uint8(255·c), which wraps: np.uint8((255·c) mod 256)
    u8 = uint8_wrap(counts)
    assert np.array_equal(u8, ((255 * counts.astype(np.int64)) % 256).astype(np.uint8))
    assert set(np.unique(u8[counts == 1])) == {255} and set(np.unique(u8[counts == 2])) == {254}
    if platform.machine().lower() in ("x86_64", "amd64"):  # the float → uint8 cast wraps on x86 only
        for t in range(2):
            pil = T.ToPILImage()(torch.from_numpy(counts[t]))
            assert pil.mode == "LA" and np.array_equal(np.asarray(pil).transpose(2, 0, 1), u8[t])
    # served frames = the original per-frame pipeline ToPILImage → Resize(48) → ToTensor, to the bit
    # (fed the wrapped uint8 frames, which is what ToPILImage made of the float counts above)
    ref = torch.stack([T.ToTensor()(T.Resize(48)(T.ToPILImage()(torch.from_numpy(f)))) for f in u8])
    assert torch.equal(dm.test_set[0][0], ref)
    assert torch.equal(FrameTransform(128, values="counts")(counts), torch.from_numpy(counts))  # raw counts
    binary = FrameTransform(128, values="binary")(counts)
    assert torch.equal(binary, torch.from_numpy((counts > 0).astype(np.float32)))


def test_asgl_recipe_flips_and_rolls_within_5_px_without_crop(c10dvs_root: Path, tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=asgl_cifar10_dvs", "T=2", f"data.root={c10dvs_root}", "data.num_workers=0",
                       "data.progress=false"], tmp_path)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup()
    # 2 samples per class: 1 trains, 1 tests (9:1 split, at least one test sample); no validation hold-out
    assert len(dm.train_set) == 10
    frames = dm.train_set.base[int(dm.train_set.indices[0])][0]
    plain = dm.eval_transform(frames)
    assert plain.shape == (2, 2, 48, 48) and 0 < float(plain.mean()) < 1
    torch.manual_seed(0)
    flips, shifts = 0, []
    for _ in range(60):
        out = dm.train_set[0][0]
        assert float(out.sum()) == pytest.approx(float(plain.sum()))  # a permutation of pixels: nothing cropped
        match = next(((f, dy, dx) for f in (False, True) for dy in range(-5, 6) for dx in range(-5, 6)
                      if torch.equal(out, torch.roll(plain.flip(-1) if f else plain, (dy, dx), (-2, -1)))), None)
        assert match is not None, "a training sample is not a flip + roll by at most 5 px of the plain frames"
        flips += match[0]
        shifts += [abs(match[1]), abs(match[2])]
    assert 15 <= flips <= 45 and max(shifts) == 5


# ---- recipes ------------------------------------------------------------------------------------------
SLTT_CUTOUT = {"data.cutout.kind": "random_erasing_like", "data.cutout.p": 0.5, "data.augment.random_crop": True,
               "data.augment.flip": True, "data.augment.autoaugment": False}
PLAIN_CIFAR = {"data.cutout.kind": "none", "data.augment.random_crop": True, "data.augment.flip": True,
               "data.augment.autoaugment": False}
SLTT_DVS = {"data.frame_values": "uint8_wrap", "data.size": 48, "data.split": "dsr", "data.augment.crop": False,
            "data.augment.flip": False, "data.augment.roll": False}
SLTT_GESTURE = {"data.frame_values": "counts", "data.size": 128, "data.drop_last": True, "data.augment.crop": False,
                "data.augment.flip": False, "data.augment.roll": False}
RECIPES = {
    "sltt_cifar10": SLTT_CUTOUT, "sltt_cifar100": SLTT_CUTOUT, "bptt_sltt_cifar10": SLTT_CUTOUT,
    "bptt_sltt_cifar100": SLTT_CUTOUT,
    "asgl_cifar10": {"data.cutout.kind": "fixed", "data.cutout.length": 16, "data.cutout.n_holes": 1,
                     "data.augment.autoaugment": True, "data.augment.random_crop": True, "data.augment.flip": True},
    "dsr_cifar10_if": PLAIN_CIFAR, "dsr_cifar100_lif": PLAIN_CIFAR, "stds_cifar10_d1": PLAIN_CIFAR,
    "stbp_tdbn_cifar10_t2": PLAIN_CIFAR,
    "sltt_cifar10_dvs": SLTT_DVS, "bptt_sltt_cifar10_dvs": SLTT_DVS, "sltt_k_cifar10_dvs": SLTT_DVS,
    "asgl_cifar10_dvs": {"data.frame_values": "uint8_wrap", "data.size": 48, "data.augment.crop": False,
                         "data.augment.flip": True, "data.augment.roll": True, "data.roll_max": 5},
    "dsr_cifar10_dvs": {"data.frame_values": "counts", "data.resize_antialias": False, "data.size": 48,
                        "data.split": "dsr", "data.augment.crop": True, "data.augment.flip": False,
                        "data.augment.roll": False},
    "sltt_dvs_gesture": SLTT_GESTURE, "bptt_sltt_dvs_gesture": SLTT_GESTURE, "sltt_k_dvs_gesture": SLTT_GESTURE,
}
# the training transform's steps, in order, for each CIFAR pipeline
ORDER = {
    "random_erasing_like": ["RandomCrop", "RandomErasingCutout", "RandomHorizontalFlip", "ToTensor", "Normalize"],
    "fixed": ["RandomCrop", "RandomHorizontalFlip", "AutoAugment", "ToTensor", "Cutout", "Normalize"],
    "none": ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"],
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_composes_to_its_papers_data_and_protocol(name: str, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={name}"], tmp_path)
    for key, want in RECIPES[name].items():
        assert OmegaConf.select(cfg, key) == want, (name, key)
    assert cfg.protocol.name == "paper" and cfg.data.val_fraction == 0.0
    assert cfg.callbacks.model_checkpoint.monitor == "test/acc1"
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")  # builds the transforms, reads no file
    if "cutout" in cfg.data:
        steps = [type(t).__name__ for t in dm.train_transform.transforms]
        assert steps == ORDER[cfg.data.cutout.kind], steps
    else:
        t = dm.train_transform
        assert (t.values, t.antialias, t.crop, t.flip, t.roll) == (
            cfg.data.frame_values, cfg.data.resize_antialias, cfg.data.augment.crop, cfg.data.augment.flip,
            cfg.data.augment.roll)
        assert dm.eval_transform.values == cfg.data.frame_values and not dm.eval_transform.flip


def test_every_paper_recipe_runs_the_papers_protocol() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import repro

    for path in repro.recipes().values():
        overrides = [str(e) for e in OmegaConf.load(path).defaults]
        paper = "{'override /data': 'digits'}" not in overrides  # the digits recipes have no paper
        assert ("{'override /protocol': 'paper'}" in overrides) == paper, path.name
    # what `make repro-list` prints per recipe (the full listing is checked in test_repro.py)
    assert repro.describe(repro.recipes()["sltt_cifar10"])["protocol"] == "paper"
    assert repro.describe(repro.recipes()["stds_digits"])["protocol"] == "clean"


def test_fixed_cutout_is_asgls_square() -> None:
    torch.manual_seed(0)
    holes = [(Cutout(1, 16)(torch.ones(3, 32, 32)) == 0).all(0).sum().item() for _ in range(50)]
    assert max(holes) == 256 and min(holes) >= 64  # 16×16, clipped at the border to at least 8×8


# ---- protocol=paper -------------------------------------------------------------------------------
def test_paper_protocol_trains_on_all_training_samples_and_tests_every_epoch(make_cfg) -> None:
    from spikeforge.run import train

    # default callbacks and loggers (progress bar included), as users run it
    # the digits at their native 8×8 keep the run short; every training image is used
    cfg = make_cfg("protocol=paper", "T=2", "trainer.max_epochs=2", "inference_cost=false", "data.image_size=8",
                   "model.pool_size=1", "data.batch_size=128")
    results = train(cfg)
    rest, _ = stratified_split(load_digits().target, cfg.data.test_fraction, cfg.data.split_seed)
    n_train = len(rest)  # every non-test digit trains: no validation hold-out
    assert results["global_steps"] == 2 * math.ceil(n_train / cfg.data.batch_size)
    p = results["protocol"]
    assert p["name"] == "paper" and "test set" in p["selection"]
    assert len(p["test_acc1_per_epoch"]) == 2
    assert p["best_test_acc1"] == max(p["test_acc1_per_epoch"]) and p["last_test_acc1"] == p["test_acc1_per_epoch"][-1]
    assert results["val"] == {} and results["best_val_acc1"] is None
    assert results["test"]["test/acc1"] == pytest.approx(p["best_test_acc1"], abs=1e-6)  # the best checkpoint
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    per_epoch = [(int(r["epoch"]), float(r["test/acc1"])) for r in rows if r.get("test/acc1")]
    assert [e for e, _ in per_epoch][:2] == [0, 1]
    assert [a for _, a in per_epoch][:2] == pytest.approx(p["test_acc1_per_epoch"])
    assert not any(r.get("val/acc1") for r in rows)
    saved = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert saved["protocol"] == json.loads(json.dumps(p))


def test_paper_protocol_refuses_a_validation_hold_out(make_cfg) -> None:
    from spikeforge.run import build_datamodule, build_module

    cfg = make_cfg("protocol=paper", "data.val_fraction=0.1")
    with pytest.raises(ConfigError, match="protocol=paper trains on the full training split"):
        apply_protocol(cfg, build_datamodule(cfg), build_module(cfg))
    clean = make_cfg()
    assert clean.protocol.name == "clean" and clean.data.val_fraction == 0.1


def test_summary_table_names_each_rows_protocol(tmp_path: Path) -> None:
    from spikeforge.reporting import collect_runs, summarize, to_markdown

    for name, protocol in (("a", {"name": "paper", "selection": "test set", "last_test_acc1": 0.91}), ("b", None)):
        run = tmp_path / name
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            f"method: {{name: bptt}}\nmodel: {{name: convnet}}\ndata: {{name: digits}}\nT: {2 if name == 'a' else 4}\n")
        res = {"method": "bptt", "model": "convnet", "data": "digits", "T": 2 if name == "a" else 4, "epochs": 1,
               "test": {"test/acc1": 0.95}, "expected": {"top1": 97.0}}
        if protocol:
            res["protocol"] = protocol
        (run / "results.json").write_text(json.dumps(res))
    md = to_markdown(summarize(collect_runs(tmp_path)), ["method", "model", "data", "T"])
    header = md.splitlines()[0]
    assert header.index("paper top-1 %") < header.index("protocol")
    assert "paper: test-set selection (last 91.00)" in md and "clean: validation selection" in md


def test_plot_draws_the_per_epoch_test_accuracy_of_paper_runs(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import plot

    from spikeforge.reporting import collect_runs

    run = tmp_path / "0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("method: {name: bptt}\nmodel: {name: convnet}\ndata: {name: digits}\n")
    (run / "csv").mkdir()
    (run / "csv" / "metrics.csv").write_text("epoch,step,test/acc1\n0,10,0.5\n1,20,0.7\n")
    (run / "results.json").write_text(json.dumps({"method": "bptt", "T": 2, "protocol": {
        "name": "paper", "test_acc1_per_epoch": [0.5, 0.7]}}))
    ((label, (xs, ys)),) = plot.val_curves(collect_runs(tmp_path)).items()
    assert "paper protocol" in label and xs == [0, 1] and ys == pytest.approx([50.0, 70.0])

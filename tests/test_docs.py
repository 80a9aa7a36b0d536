"""The README and docs/ stay true to the repository: every relative link (and anchor) resolves, every
``make <target>`` is a Makefile target, every ``python scripts/...`` names a script, and every
``python src/{train,eval,export}.py ...`` command line composes with Hydra as written (in-process, as
``--cfg job`` would; nothing is run). Nothing in them points outside the repository."""

from __future__ import annotations

import fnmatch
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from conftest import compose_cfg
from hydra.core.override_parser.overrides_parser import OverridesParser

from spikeforge.cli import open_key_overrides  # what the entry points do to ``data_overrides.*``

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
README_MAX_LINES = 300

FENCE = re.compile(r"^ *```[^\n]*\n(.*?)^ *```", re.S | re.M)  # list items indent theirs
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
ENTRY = re.compile(r"python src/(train|eval|export)\.py\b(.*)")

# placeholders the docs leave to the reader, filled with a value of the right kind
FILL = {
    "<run>": "2026-01-01_00-00-00", "<ann run>": "outputs/train/runs/ann", "<stage-1 run>": "outputs/train/runs/s1",
    "<sweep dir>": "outputs/sweep", "<file.ckpt>": "outputs/train/runs/x/checkpoints/last.ckpt",
    "<ckpt>": "outputs/train/runs/x/checkpoints/last.ckpt", "<file>": "model.out", "<lr>": "0.005",
    "<v>": "1.0", "<name>": "convnet", "<dir>": "outputs",
}
DROP = ("<same overrides>", "<overrides>", "...")  # stand for "your overrides": nothing to compose


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    return INLINE.sub("", FENCE.sub("", text))


def _code(text: str) -> list[str]:
    """Every line of the fenced code blocks (continuations joined, comments cut) and every inline span."""
    snippets = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            snippets.append(line.split(" #", 1)[0].strip().removesuffix("&").strip())
    snippets += [" ".join(s.split()) for s in INLINE.findall(FENCE.sub("", text))]
    return [s for s in snippets if s]


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    h = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


@cache
def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", _text(path)).splitlines():
        if m := re.match(r"#{1,6} (.+)", line):
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_docs_exist_and_readme_is_the_front_door() -> None:
    assert len(DOCS) > 10
    n = len(_text(ROOT / "README.md").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it ≤ {README_MAX_LINES} and move detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_relative_links_resolve(doc: Path) -> None:
    bad = []
    for m in LINK.finditer(_prose(_text(doc))):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if ROOT not in (dest, *dest.parents):
            bad.append(f"{target}: outside the repository")
        elif not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {_rel(dest)}")
    assert not bad, f"{_rel(doc)}: " + "; ".join(bad)


def test_nothing_points_outside_the_repository() -> None:
    pattern = re.compile(r"\.\./shared|\.\./seeds|shared/seeds|seeds/\d{3}")
    files = [*DOCS, *(ROOT / "conf").rglob("*.yaml"), *(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]
    bad = [f"{_rel(f)}: {m.group(0)}" for f in files for m in pattern.finditer(_text(f))]
    assert not bad, bad


def _make_targets() -> list[str]:
    return re.findall(r"^([A-Za-z0-9_.%-]+)\s*:(?!=)", _text(ROOT / "Makefile"), re.M)


def test_every_make_target_exists() -> None:
    targets = _make_targets()
    recipes = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    checked, bad = 0, []
    for doc in DOCS:
        for snippet in _code(_text(doc)):
            for target in re.findall(r"(?:^|[;&|] *)make ([\w.%<>-]+)", snippet):
                if "<" in target:  # make repro-<recipe>
                    target = target.split("<")[0] + "%"
                checked += 1
                if target in targets:
                    continue
                if not any(fnmatch.fnmatchcase(target, t.replace("%", "*")) for t in targets):
                    bad.append(f"{_rel(doc)}: make {target}")
                elif target.startswith("repro-") and "%" not in target:
                    recipe = target[6:].replace("-", "_")
                    if recipe not in recipes:
                        bad.append(f"{_rel(doc)}: make {target} (no recipe conf/experiment/{recipe}.yaml)")
    assert checked >= 15, f"only {checked} make commands found"
    assert not bad, bad


def test_every_script_exists() -> None:
    checked, bad = 0, []
    for doc in DOCS:
        for snippet in _code(_text(doc)):
            for path in re.findall(r"(?<![\w/.])(scripts/[\w/.-]+\.(?:py|sh|sbatch))", snippet):
                checked += 1
                if not (ROOT / path).is_file():
                    bad.append(f"{_rel(doc)}: {path}")
    assert checked >= 15, f"only {checked} script paths found"
    assert not bad, bad


def _entry_commands() -> list[tuple[str, str, str]]:
    """(doc, entry point, argument string) of every ``python src/<entry>.py`` command, and of ``make
    train|eval|repro-*`` with ``ARGS``."""
    out = []
    for doc in DOCS:
        for snippet in _code(_text(doc)):
            if m := ENTRY.search(snippet):
                out.append((_rel(doc), m.group(1), m.group(2)))
            elif m := re.match(r"make (train|eval|repro-[\w-]+)(?: ARGS=(\"[^\"]*\"|\S+))?$", snippet):
                target, args = m.group(1), " ".join(shlex.split(m.group(2) or ""))  # ARGS's unquoted value
                if target.startswith("repro-"):
                    recipe = target[6:].replace("-", "_")
                    if not (ROOT / "conf" / "experiment" / f"{recipe}.yaml").is_file():
                        continue  # repro-list, repro-<recipe>: test_every_make_target_exists
                    target, args = "train", f"experiment={recipe} {args}"
                out.append((_rel(doc), target, args))
    return out


def _overrides(args: str) -> tuple[list[str], bool] | None:
    """The overrides of a command line (placeholders filled, sweeps at their first value) and whether it is
    a multirun; None where a placeholder cannot be filled."""
    for token in DROP:
        args = args.replace(token, " ")
    for placeholder, value in FILL.items():
        args = args.replace(placeholder, value)
    if "<" in args:
        return None
    argv = shlex.split(args)
    multirun = "-m" in argv or "--multirun" in argv
    words = []
    skip_next = False
    for a in argv:
        if skip_next:
            skip_next = False
        elif a in ("--cfg", "-c", "--package", "-p"):
            skip_next = True
        elif a.strip() and not a.startswith("-"):
            words.append(a)
    overrides = []
    for o in OverridesParser.create().parse_overrides(words):
        if o.is_sweep_override():
            if not multirun:
                raise ValueError(f"a sweep ({o.input_line}) in a command without -m")
            overrides.append(f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}")
        else:
            overrides.append(o.input_line)
    return overrides, multirun


def test_every_command_line_composes() -> None:
    commands = _entry_commands()
    seen: set[tuple[str, tuple[str, ...]]] = set()
    skipped, bad = [], []
    for doc, entry, args in commands:
        try:
            parsed = _overrides(args)
        except Exception as e:  # reported with its command line
            bad.append(f"{doc}: python src/{entry}.py {args.strip()}\n    {e}")
            continue
        if parsed is None:
            skipped.append(f"{doc}: {entry} {args}")
            continue
        key = (entry, tuple(parsed[0]))
        if key in seen:
            continue
        seen.add(key)
        try:
            overrides = parsed[0] if entry == "train" else open_key_overrides(parsed[0])
            hydra_keys = any(o.lstrip("+~").startswith("hydra") for o in overrides)
            compose_cfg(overrides, config_name=entry, return_hydra_config=hydra_keys)
        except Exception as e:  # reported with its command line
            bad.append(f"{doc}: python src/{entry}.py {args.strip()}\n    {type(e).__name__}: {str(e).splitlines()[0]}")
    assert len(seen) >= 40, f"only {len(seen)} distinct command lines composed"
    print(f"{len(seen)} command lines composed, {len(skipped)} skipped: {skipped}")
    assert len(skipped) <= 3, f"placeholders this test cannot fill: {skipped}"
    assert not bad, "\n".join(bad)

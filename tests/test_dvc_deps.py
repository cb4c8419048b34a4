"""dvc.yaml's code deps against what each stage really imports.

For every stage DVC resolves (every foreach / matrix instance), the library modules its command loads are derived
from the code: the import closure (module-level and function-level imports, read from the source) of its
pipeline script, the stage runner its CLI command calls, and what the code imports by name at run time: the run's
model file(s) (``models.base.model_class``), its family's hooks (``runs.FAMILY_HOOKS``), the teacher loader when the
model needs a teacher, the reader of the dataset's format and the encoder family's module. Each of those files must
be covered by a dep (the file or a folder above it), and a train / evaluate stage may list no other model's file,
so editing one model's file reruns only that model's stages. The caches a model declares
(``required_inputs``) must be deps too.
"""

from __future__ import annotations

import ast
import shlex
from functools import lru_cache
from pathlib import Path

import pytest

from modalrec.params import load_params

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DISPATCHERS = {"modalrec.cli"}  # one command per stage: only its module-level imports belong to every stage


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


@lru_cache(maxsize=None)
def direct_imports(name: str) -> frozenset[str]:
    """The modalrec modules ``name`` imports (with their parent packages), at module level only for dispatchers."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if name in DISPATCHERS else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names if module_file(f"{mod}.{a.name}")}
    out = set()
    for mod in found:
        if mod.split(".")[0] == "modalrec" and module_file(mod):
            parts = mod.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return frozenset(out)


def is_code(name: str) -> bool:
    """False for a package ``__init__.py`` that holds only its docstring: it runs nothing a stage could depend on."""
    path = module_file(name)
    body = ast.parse(path.read_text()).body
    return path.name != "__init__.py" or any(
        not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def closure(roots: set[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(direct_imports(m) - seen)
    return seen


def script_imports(script: Path) -> set[str]:
    tree = ast.parse(script.read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return {m for m in mods if m.split(".")[0] == "modalrec"}


def runtime_modules(params: dict, stage: str, argv: list[str]) -> tuple[set[str], list[str]]:
    """(modules imported by name at run time, data paths the stage reads that the code declares) for one cmd."""
    from modalrec.encode.registry import _FAMILY_MODULES
    from modalrec.data.readers import FORMATS
    from modalrec.runs import FAMILY_HOOKS, model_config, resolve_run
    from modalrec.stages.train import TEACHER_MODULE, input_paths

    mods, data = {f"modalrec.stages.{stage}"}, []
    ds = params["base"]["dataset"]
    if stage == "prepare":
        fmt = params["datasets"][ds]["format"]
        if fmt in FORMATS:  # (synthetic: the generator, imported by the stage itself)
            mods.add(f"modalrec.data.readers.{FORMATS[fmt]}")
    elif stage == "encode":
        key = argv[argv.index("--modality") + 1]
        mods.add(f"modalrec.encode.{_FAMILY_MODULES[params['encode'][key]['family']]}")
    elif stage in ("train", "evaluate"):
        spec = resolve_run(params, argv[0])
        mods.add(f"modalrec.models.{spec.arch}")
        if spec.arch == "kdsr":
            mods.add(f"modalrec.models.{spec.cfg.get('backbone', 'sasrec')}")
        if spec.family in FAMILY_HOOKS:
            mods.add(FAMILY_HOOKS[spec.family])
        from modalrec.models.base import model_class

        needs = model_class(spec.name, spec.arch).required_inputs(model_config(spec))
        if "teacher" in needs:
            mods.add(TEACHER_MODULE)
        data = [str(p) for p in input_paths(ds, list(needs)).values()]
    return mods, data


@pytest.fixture(scope="module")
def stages():
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return [(s.name, s.cmd, [str(d.def_path) for d in s.deps]) for s in repo.index.stages]


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_depends_on_the_code_it_imports(stages):
    params = load_params(ROOT / "params.yaml")
    from modalrec.models.base import available_models

    model_files = {f"src/modalrec/models/{m}.py" for m in available_models()}  # a registered model's own file
    missing, foreign = {}, {}
    assert len(stages) >= 20
    for name, cmd, deps in stages:
        argv = shlex.split(cmd if isinstance(cmd, str) else cmd[0])
        assert argv[:2][0] == "python" and argv[1].startswith("pipeline/"), f"{name}: {cmd}"
        script = ROOT / argv[1]
        stage = script.stem
        extra, data = runtime_modules(params, stage, argv[2:])
        mods = closure(script_imports(script) | extra)
        files = {str(module_file(m).relative_to(ROOT)) for m in mods if is_code(m)} | {argv[1]}
        miss = sorted(f for f in files | set(data) if not covered(f, deps))
        if miss:
            missing[name] = miss
        if stage in ("train", "evaluate"):  # precision: no other model's file, so its edits don't rerun this run
            models = [d for d in deps if d in model_files]
            extra_models = [d for d in models if d not in files]
            if extra_models:
                foreign[name] = extra_models
    assert not missing, f"dvc.yaml misses deps the stages import or read: {missing}"
    assert not foreign, f"stages depend on model files they never import: {foreign}"


def test_the_closure_sees_lazy_imports():
    """The derivation is not vacuous: function-level imports count, and a run's model file pulls in its own code."""
    assert "modalrec.teacher.teacher" in closure({"modalrec.stages.distill"})
    assert "modalrec.models.sasrec" in closure({"modalrec.models.kdsr"}) or \
        "modalrec.models.sasrec" not in closure({"modalrec.models.gru4rec"})
    assert "modalrec.losses.inbatch" in closure({"modalrec.models.odmt"})
    assert not any(m.startswith("modalrec.teacher") for m in closure({"modalrec.stages.train"}))

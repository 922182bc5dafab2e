"""The house rules, checked on the source: no import cycles, layers only import downward, one
checkpoint reader/writer, one normalisation, CLI modules built on ``cli/_common`` only, and
the command line offering what the registries hold, with one default per shared option."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
import typer.main

import cxrlens
from cxrlens.cli import app
from cxrlens.data.io import DEFAULT_MAX_PIXELS

SOURCE = Path(cxrlens.__file__).parent

# Bottom to top: a module may import its own layer and the ones before it, never a later one.
LAYERS = [
    {"cxrlens", "cxrlens.paths", "cxrlens.devices", "cxrlens.registry", "cxrlens.config"},
    {"cxrlens.checkpoints"},
    {"cxrlens.data"},
    {"cxrlens.models"},
    {"cxrlens.explain"},
    {"cxrlens.evaluate"},
    {"cxrlens.train"},
    {"cxrlens.ssl"},
    {"cxrlens.infer"},
    {"cxrlens.serve"},
    {"cxrlens.experiment"},
    {"cxrlens.tables"},
    {"cxrlens.pipeline", "cxrlens.deviations"},
    {"cxrlens.cli"},
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in SOURCE.rglob("*.py"):
        parts = ["cxrlens", *path.relative_to(SOURCE).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def _imports(module: str) -> set[str]:
    """The cxrlens modules ``module`` imports anywhere in its file (inside functions too)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in MODULES else base)
    return found & set(MODULES)


GRAPH = {module: _imports(module) for module in MODULES}


def _layer(module: str) -> int:
    return max(rank for rank, layer in enumerate(LAYERS) for prefix in layer
               if module == prefix or module.startswith(prefix + "."))


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        _layer(module)


def test_no_import_cycles_counting_imports_inside_functions() -> None:
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_layers_import_only_downward() -> None:
    upward = [f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
              for module, targets in GRAPH.items() for target in targets if _layer(target) > _layer(module)]
    assert not upward, upward


def _calls(attribute: str, owner: str) -> list[str]:
    """Modules calling ``owner.attribute(...)``."""
    return sorted(module for module, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Attribute) and node.attr == attribute
                  and isinstance(node.value, ast.Name) and node.value.id == owner)


def test_only_checkpoints_py_saves_and_loads_torch_files() -> None:
    assert _calls("save", "torch") == ["cxrlens.checkpoints"]
    assert set(_calls("load", "torch")) == {"cxrlens.checkpoints"}  # its own format, and published weights files


def test_normalisation_is_computed_in_one_function() -> None:
    """Dividing by a ``std`` (and converting uint8 to [0, 1]) happens in data/preprocess.py alone."""
    divisions = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                divisor = ast.unparse(node.right)
                if "std" in divisor:
                    divisions.append(f"{module}: {ast.unparse(node)}")
    assert divisions == ["cxrlens.data.preprocess: (to_unit_float(images) - normalisation.mean) / normalisation.std"]
    users = sorted(module for module, path in MODULES.items() if "to_unit_float(" in path.read_text())
    assert users == ["cxrlens.data.preprocess"]


def test_cli_command_modules_import_only_common_of_the_cli() -> None:
    leaves = [module for module in MODULES if module.startswith("cxrlens.cli.") and module != "cxrlens.cli._common"]
    assert {"cxrlens.cli.data", "cxrlens.cli.train", "cxrlens.cli.evaluate", "cxrlens.cli.infer",
            "cxrlens.cli.run"} <= set(leaves)
    for module in leaves:
        assert {target for target in GRAPH[module] if target.startswith("cxrlens.cli")} <= {"cxrlens.cli._common"}, module
    assert not {target for target in GRAPH["cxrlens.cli._common"] if target.startswith("cxrlens.cli")}


def _parameters() -> list[tuple[str, object]]:
    """(command path, click parameter) for every parameter of every command."""
    found = []
    stack = [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        found += [(" ".join(path), parameter) for parameter in command.params]
        stack += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
    return found


def _choices(parameter: object) -> tuple:
    """The values a parameter's ``Literal`` (or ``Optional[Literal]``) annotation allows."""
    annotation = parameter.type_descriptor.annotation
    literal = next((arg for arg in get_args(annotation) if get_origin(arg) is Literal), annotation)
    assert get_origin(literal) is Literal, annotation
    return get_args(literal)


def test_one_device_option_with_one_default_everywhere() -> None:
    devices = [(path, parameter) for path, parameter in _parameters() if parameter.name == "device"]
    assert {path for path, _ in devices} >= {"train-supervised", "finetune", "refine", "pretrain", "evaluate",
                                              "linear-eval", "predict", "serve", "run", "quickstart"}
    for path, parameter in devices:
        assert parameter.default == "auto", path
        assert _choices(parameter) == ("auto", "cpu", "cuda"), path


def test_cli_choices_follow_the_registries() -> None:
    from cxrlens.explain import METHODS
    from cxrlens.models import ARCHITECTURES, BACKBONES

    wanted = {"cam": METHODS.names(), "backbone": BACKBONES.names(), "arch": ARCHITECTURES.names()}
    seen = set()
    for path, parameter in _parameters():
        if parameter.name in wanted:
            assert _choices(parameter) == wanted[parameter.name], (path, parameter.name)
            seen.add(parameter.name)
    assert seen == set(wanted)


def test_pixel_cap_has_one_default() -> None:
    caps = [(path, parameter.default) for path, parameter in _parameters() if parameter.name == "max_pixels"]
    assert {path for path, _ in caps} == {"predict", "serve"}
    assert all(default == DEFAULT_MAX_PIXELS for _, default in caps), caps


def test_ssl_method_registry_matches_the_config_union() -> None:
    from cxrlens.config import MethodConfig
    from cxrlens.ssl import METHODS

    union = get_args(get_args(MethodConfig)[0])
    assert {config.model_fields["name"].default for config in union} == set(METHODS.names())
    for config in union:
        assert inspect.signature(METHODS.get(config.model_fields["name"].default)).parameters["config"]

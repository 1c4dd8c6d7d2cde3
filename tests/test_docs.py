"""Keep the API reference (docs/api.md, Sphinx autodoc) in step with the public modules.

The reference names every public object with an explicit directive (``autoclass``,
``autofunction``, ``py:data`` ...); class members come from autodoc's ``members`` default, so a
new method with a docstring appears without editing the page. These tests fail when a name in a
public module's ``__all__`` has no directive, when a directive names something no longer
public, or when a directive would hide members (an explicit member list, or undocumented members
without ``:undoc-members:``). ``tox -e docs`` then checks that every directive builds.
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
import types
from pathlib import Path

import attrs
import pytest

from test_all import PUBLIC_MODULES

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = DOCS / "api.md"

#: An object directive inside an ``{eval-rst}`` block, and the option lines under it.
DIRECTIVE = re.compile(
    r"^\.\. (?P<kind>auto\w+|py:\w+):: (?P<target>\S+)\n(?P<options>(?:   :.*\n)*)", re.M
)
OPTION = re.compile(r"^   :(?P<name>[\w-]+):(?P<value>.*)$", re.M)


@attrs.frozen
class Directive:
    kind: str
    name: str  # the full dotted name it documents
    options: dict[str, str]


def directives() -> list[Directive]:
    found = []
    for match in DIRECTIVE.finditer(API.read_text(encoding="utf-8")):
        options = {m["name"]: m["value"].strip() for m in OPTION.finditer(match["options"])}
        target = match["target"]
        if "module" in options:
            target = f"{options['module']}.{target}"
        found.append(Directive(match["kind"], target, options))
    return found


def objects() -> dict[str, Directive]:
    """Documented objects by full name (modules left out)."""
    return {d.name: d for d in directives() if d.kind not in ("automodule", "py:module")}


def resolve(name: str) -> tuple[types.ModuleType, str] | None:
    """The public module and the name in it that ``name`` designates, if any."""
    module_name, _, attribute = name.rpartition(".")
    for module in PUBLIC_MODULES:
        if module.__name__ == module_name:
            return module, attribute
    return None


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_every_name_in_all_has_a_directive_in_the_api_reference(
    module: types.ModuleType,
) -> None:
    documented = objects()
    missing = [name for name in module.__all__ if f"{module.__name__}.{name}" not in documented]
    assert missing == [], f"add these to docs/api.md: {missing}"


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda module: module.__name__)
def test_every_public_module_has_its_section(module: types.ModuleType) -> None:
    modules = {d.name for d in directives() if d.kind == "automodule"}
    assert module.__name__ in modules


def test_api_reference_documents_only_public_names() -> None:
    stale = []
    for name in objects():
        resolved = resolve(name)
        if resolved is None or resolved[1] not in resolved[0].__all__:
            stale.append(name)
    assert stale == [], f"not in any public module's __all__: {stale}"


def test_classes_list_their_members_automatically() -> None:
    for name, directive in objects().items():
        if directive.kind not in ("autoclass", "autoexception"):
            continue
        # An explicit list (":members: a, b") would hide every member added later.
        assert directive.options.get("members", "") == "", name
        resolved = resolve(name)
        assert resolved is not None
        cls = getattr(*resolved)
        undocumented = [member for member in _own_members(cls) if not _has_docstring(cls, member)]
        if undocumented and not issubclass(cls, enum.Enum):
            assert "undoc-members" in directive.options, (name, undocumented)


def test_sphinx_documents_members_by_default() -> None:
    tree = ast.parse((DOCS / "conf.py").read_text(encoding="utf-8"))
    (options,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "autodoc_default_options" for t in node.targets)
    ]
    assert options["members"] is True


def _own_members(cls: type) -> list[str]:
    """Public methods and properties the class defines (fields and enum members left out)."""
    return [
        name
        for name, value in vars(cls).items()
        if not name.startswith("_")
        and isinstance(value, (types.FunctionType, property, classmethod, staticmethod))
    ]


def _has_docstring(cls: type, member: str) -> bool:
    return bool(inspect.getdoc(getattr(cls, member)))

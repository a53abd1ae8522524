"""The package's shape, checked: no import cycles, packages import only lower ones, small modules, hooks and
batching only in the patching API, and a top level that exports the nouns and changes no global state."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

import flowsteer

ROOT = Path(flowsteer.__file__).resolve().parent
# Lowest first: a package may import only packages at its own rank or below (same rank: no edge either way).
LAYERS = [
    {"flowsteer", "sites", "paths", "resources", "display", "extras"},
    {"models"},
    {"patching"},
    {"evals", "data"},
    {"saes"},
    {"flow", "invertible"},
    {"steering"},
    {"refusal"},
    {"demo"},
    {"cli"},
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = ["flowsteer", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> nx.DiGraph:
    """Every ``flowsteer`` import of every module (lazy ones inside functions too; ``TYPE_CHECKING`` ones not)."""
    modules = {module_name(path): path for path in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for sub in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "flowsteer":
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    targets.append(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names if a.name.split(".")[0] == "flowsteer"]
            for target in targets:
                graph.add_edge(name, target)
                # Importing a.b.c runs the __init__ of a.b first: an edge to each such package outside our own.
                parts = target.split(".")
                for depth in range(2, len(parts)):
                    parent = ".".join(parts[:depth])
                    if not (name == parent or name.startswith(parent + ".")):
                        graph.add_edge(name, parent)
    return graph


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "flowsteer"


def test_no_import_cycles():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles[:5])


def test_packages_import_only_lower_ones():
    """Leaf modules (which import nothing of flowsteer, e.g. the refusal phrase list) may be imported from any
    layer: such an import can never close a cycle."""
    graph = import_graph()
    unknown = {package(m) for m in graph} - set(RANK)
    assert not unknown, f"packages with no layer in LAYERS: {unknown}"
    upward = sorted(
        f"{a} -> {b}"
        for a, b in graph.edges
        if package(a) != package(b) and RANK[package(b)] >= RANK[package(a)] and package(a) != "flowsteer"
        and graph.out_degree(b) > 0
    )
    assert not upward, "imports of a package at the same or a higher layer: " + ", ".join(upward)


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_hooks_and_batching_live_only_in_the_patching_api():
    hook_calls = re.compile(r"\.(add_hook|run_with_hooks|register_forward_hook|register_forward_pre_hook)\(|\.hooks\(")
    hand_batching = re.compile(r"for .* in range\(0, len\(.*\), batch_size\)")
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] == "patching":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if hook_calls.search(line) or hand_batching.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "hooks or hand batching outside flowsteer/patching: " + "; ".join(offenders)


def test_transformer_lens_internals_live_only_in_models():
    """Outside ``flowsteer/models`` TransformerLens is reached through ``HookedTransformer``'s type and public calls
    only; hook points, the forward pass in pieces, the key-value cache, the model's tail and its weights go through
    `flowsteer.models.tl` (the one place a TransformerLens 4 port rewrites)."""
    internals = re.compile(r"\bmodel\.(hook_dict|mod_dict|ln_final|unembed|W_U|W_E|W_pos|blocks)\b|past_kv_cache"
                           r"|normalization_type|output_logits_soft_cap")
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("transformer_lens"):
                if node.module != "transformer_lens" or [a.name for a in node.names] != ["HookedTransformer"]:
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
            elif isinstance(node, ast.Import) and any(a.name.startswith("transformer_lens") for a in node.names):
                offenders.append(f"{path.relative_to(ROOT)}: import transformer_lens")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if internals.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "TransformerLens internals outside flowsteer/models: " + "; ".join(offenders)


def test_library_code_logs_instead_of_printing():
    """Only the command line and the demo's report print; the library logs (``logging``) and shows tqdm bars."""
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in ROOT.rglob("*.py") if path.relative_to(ROOT).parts[0] not in ("cli", "demo")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name) and node.id == "print"
    ]
    assert not offenders, f"print in library code: {offenders}"


def test_import_changes_no_global_state():
    code = (  # the libraries flowsteer loads add filters of their own on import: load them first
        "import logging, warnings, torch, transformers, transformer_lens, scipy.special; "
        "before = list(warnings.filters); import flowsteer; "
        "assert warnings.filters == before, 'warning filters changed'; "
        "assert not logging.getLogger().handlers, 'a logging handler was installed'; "
        "assert not any('flowsteer' in str(f) for f in warnings.filters)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent)


@pytest.mark.parametrize("name", flowsteer.__all__)
def test_every_exported_name_resolves(name):
    assert getattr(flowsteer, name) is not None


def test_the_nouns_of_the_docs_are_exported():
    from flowsteer import ClampFeatures, FeatureSteerer, InvertibleIntervention, SAEBank, build_flow_graph

    assert SAEBank.__module__.startswith("flowsteer.saes") and callable(build_flow_graph)
    assert {ClampFeatures, FeatureSteerer, InvertibleIntervention} <= {getattr(flowsteer, n) for n in flowsteer.__all__}

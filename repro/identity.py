"""The code identity of a run: a digest of the definitions its computation can reach, with what
cannot change a number left out.

Two choices make it so.

**A normalised digest.** A unit of code is digested from its token stream with comments, NL
tokens (line breaks inside brackets and blank lines) and docstrings (the first string-expression
statement of a module, class or function, found by ``ast``) dropped, and INDENT / DEDENT / NEWLINE
kept by type only (not their whitespace). So a comment, a docstring, re-indentation inside
brackets or a reflowed call digest the same, while any change of a name, operator, literal or
statement structure does not. (Token strings, not a syntax tree dump: a syntax tree's dump format
changes with Python's minor version, the tokens of the same source do not, 3.12's f-string tokens
aside.)

**Definition-level reachability.** The units of a file are its top-level definitions (a function;
a class with its methods), its constants (an assignment without effect, one unit per statement,
reached by any name it binds), one unit per name a top-level import binds, its
``if __name__ == "__main__":`` block (``<main>``) and one "module body" unit (``<module>``: every
other top-level statement, i.e. those with an effect: calls, registrations, ``try`` blocks...).
The roots are

- ``repro/run.py::_run``, the computation a run executes (not ``resolve``, ``inputs``,
  ``staleness`` or ``execute``'s manifest writing: bookkeeping that decides no number);
- every module body of a file in the closure (it runs on import); not its ``<main>`` block, which
  runs only when the file is run as a program (a file run so by name, as torchrun runs
  ``-m repro.distributed``, is identified whole, see below);
- every unit of the run's own plug-in files (model, embedding layer; a measurement's module) and
  of every ``__init__.py``: whole files. Not the data source's file: it acts only through the data
  preparation, a boundary (below);
- every definition with a decorator outside ``PURE_DECORATORS``: an unknown decorator may register
  the definition somewhere (``@register_model``), so it is reached without being named.

From the roots, a top-level definition or constant of any closure file is included when its NAME
is used in an included unit (an import unit, when its name is used in its own file): as an
``ast.Name`` it loads (matching by name across files over-approximates, the safe side; a name
local to an enclosing function, a parameter ``inputs`` say, is not ``repro.run.inputs``, while a
name a function imports is followed), or as the attribute of a chain whose leftmost
name some import binds (``metric_fns.relevance_auc``, ``repro.train.fit``). An attribute of any
other base (``path.resolve()``, ``self.config``) cannot be a module's function, so it reaches no
top-level definition; a class reached by name brings every method. ``from a import b as c``: using
``c`` uses ``b``. This runs to a fixed point together with the file closure: a file joins when an
import that is executed imports it (a top-level import always, an import inside a function only
when that function is included) and its package ``__init__`` files with it; a file loaded by path
(a string ``"<name>.py"`` naming a project file of the same folder or of ``datasets/``, in a unit
that calls ``spec_from_file_location``, e.g. ``datasets/tabular.py`` loading ``criteo.py``) or by
a dotted module name in a string (in a unit that calls ``import_module`` or passes ``"-m"``:
``"repro.distributed"``, which torchrun runs) joins whole.

Limits, chosen: an import nothing included uses is left out (its module's import-time effects are
its module body's, a root whenever the module is a project file, or a library's, which the
versions cover); a module reached through an assigned alias (``m = metrics; m.auc()``) or by
``getattr(module, "name")`` is not followed (the core has neither; ``tests/test_identity.py``
checks the dispatches it has); the plug-in loader's imports of every method (``load_plugins``)
are not followed, as before: a method's file is not in another method's identity.

Boundary definitions (``BOUNDARY``) are never entered: ``repro.data.prepare.prepare`` builds the
prepared cache, whose content is the run's data input (its own identity, see
``repro.data.ledger``), so what only it reaches is not part of the code identity.

The identity is ``stable_hash({file: {unit: digest}})`` over the included units; the per-file
digests let a stale run name the file that changed. Every file is read through a ``Reader``
(relative path -> bytes, None when there is no such file), so the same code identifies the working
tree and a file set at a past commit (``repro.migrate_identity``).
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from repro.errors import ReproError
from repro.io import stable_hash

Reader = Callable[[str], "bytes | None"]

PROJECT_PACKAGES = ("repro", "baselines", "methods")
CORE_RUN_FILE = "repro/run.py"
CORE_RUN_ROOT = "_run"
MODULE_BODY = "<module>"
MAIN_BLOCK = "<main>"  # a file's `if __name__ == "__main__":` block
# Decorators that only wrap or describe a definition; any other may register it (a root).
PURE_DECORATORS = frozenset({
    "dataclass", "dataclasses.dataclass", "lru_cache", "functools.lru_cache", "cache", "functools.cache",
    "cached_property", "functools.cached_property", "property", "staticmethod", "classmethod",
    "contextmanager", "contextlib.contextmanager", "torch.no_grad", "torch.inference_mode", "wraps",
    "functools.wraps", "abstractmethod", "abc.abstractmethod", "override", "typing.override",
})
PROPERTY_PARTS = ("setter", "getter", "deleter")  # `@name.setter` of a property
# (file, definition) pairs reachability does not enter: the data preparation, whose output is the
# run's data input and is identified by its content.
BOUNDARY = frozenset({("repro/data/prepare.py", "prepare")})
_DROPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
_TYPE_ONLY_TOKENS = {tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE}


def disk_reader(root: Path) -> Reader:
    """Files of the tree at ``root``."""
    def read(rel: str) -> bytes | None:
        path = Path(root) / rel
        return path.read_bytes() if path.is_file() else None
    return read


def raw_digest(blob: bytes) -> str:
    """A file's raw-byte digest, as manifests record it in ``code.files_raw``."""
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class Unit:
    name: str  # its key's name ("<module>" for the file's side-effecting statements)
    kind: str  # "def", "const", "import" or "root"
    nodes: list[ast.AST] = field(default_factory=list)
    names: tuple[str, ...] = ()  # the names that reach it


@dataclass
class ParsedFile:
    path: str
    units: dict[str, Unit]
    digests: dict[str, str]
    top_imports: list[ast.AST]  # imports executed when the module is imported
    import_bound: set[str] = field(default_factory=set)  # names any import of the file binds
    aliases: dict[str, set[str]] = field(default_factory=dict)  # `import ... b as c`: c -> {b}


# Calls a top-level constant may make without being a root: they build a value, with no effect.
PURE_CALLS = frozenset({
    "frozenset", "set", "tuple", "list", "dict", "int", "float", "str", "bool", "bytes", "range", "sorted",
    "Path", "TypeVar", "namedtuple", "field", "dataclasses.field", "re.compile", "object", "len", "max", "min",
})


def _docstring_spans(tree: ast.AST) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                spans.append(((first.lineno, first.col_offset), (first.end_lineno, first.end_col_offset)))
    return spans


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _is_pure_decorator(node: ast.AST) -> bool:
    name = _dotted(node)
    return name in PURE_DECORATORS or (name.count(".") == 1 and name.rsplit(".", 1)[1] in PROPERTY_PARTS)


def _constant_names(stmt: ast.AST) -> list[str] | None:
    """The names an assignment without effect binds (``X = ...``, ``X: T = ...``), else None: an
    assignment to an attribute or item, or one whose value calls anything but ``PURE_CALLS``,
    may act on something else, so it is a root."""
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets = [stmt.target]
    else:
        return None
    names = []
    for t in targets:
        elts = t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t]
        if not all(isinstance(e, ast.Name) for e in elts):
            return None
        names += [e.id for e in elts]
    for n in ast.walk(stmt.value):
        if isinstance(n, (ast.Call)) and _dotted(n.func) not in PURE_CALLS:
            return None
        if isinstance(n, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return None
    return names


def _is_main_block(stmt: ast.AST) -> bool:
    """``if __name__ == "__main__":``"""
    if not isinstance(stmt, ast.If) or not isinstance(stmt.test, ast.Compare) or len(stmt.test.ops) != 1:
        return False
    sides = [stmt.test.left, *stmt.test.comparators]
    return isinstance(stmt.test.ops[0], ast.Eq) and any(isinstance(x, ast.Name) and x.id == "__name__" for x in sides) \
        and any(isinstance(x, ast.Constant) and x.value == "__main__" for x in sides)


def _token_digest(tokens: list) -> str:
    return hashlib.sha256(repr(tokens).encode()).hexdigest()[:16]


def parse_file(path: str, blob: bytes) -> ParsedFile:
    """The file's units with their normalised digests.

    A top-level function or class is a "def" unit (a decorator outside ``PURE_DECORATORS`` makes
    it a root); an assignment without effect (``_constant_names``) is a "const" unit of each name
    it binds; each name a top-level import binds is an "import" unit (digested from the import's
    module and name, so adding a name to an import line changes no other unit); every other
    top-level statement (a call, a registration, a ``try``) belongs to the file's one root unit
    ``<module>``, but ``if __name__ == "__main__":``, the unit ``<main>``."""
    try:
        text = blob.decode("utf-8")
        tree = ast.parse(text, filename=path)
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ReproError(f"cannot identify {path}: {e}") from e
    units: dict[str, Unit] = {}
    spans: list[tuple[tuple[int, int], tuple[int, int], str]] = []  # token owners
    digests: dict[str, str] = {}
    top_imports = []

    def add(name: str, kind: str, nodes: list, names: tuple[str, ...] = ()) -> str:
        key = name
        while key in units:  # bound twice: both count, under distinct keys
            key += "'"
        units[key] = Unit(name, kind, nodes, names or (name,))
        return key

    body = Unit(MODULE_BODY, "root")
    for i, stmt in enumerate(tree.body):
        if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue  # the module's docstring
        span_start = (stmt.lineno, stmt.col_offset)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            span_start = min([span_start, *((d.lineno, d.col_offset - 1) for d in stmt.decorator_list)])
            kind = "def" if all(_is_pure_decorator(d) for d in stmt.decorator_list) else "root"
            key = add(stmt.name, kind, [stmt])
            if isinstance(stmt, ast.ClassDef):  # a class body runs on import
                top_imports += [n for n in _walk_outside_functions(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))]
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            top_imports.append(stmt)
            prefix = "." * getattr(stmt, "level", 0) + (getattr(stmt, "module", None) or "")
            for a in stmt.names:
                bound = a.asname or a.name.split(".")[0]
                k = add(bound, "import", [])
                what = f"from {prefix} import {a.name} as {a.asname}" if isinstance(stmt, ast.ImportFrom) \
                    else f"import {a.name} as {a.asname}"
                digests[k] = hashlib.sha256(what.encode()).hexdigest()[:16]
            continue
        elif (names := _constant_names(stmt)) is not None:
            key = add(",".join(names), "const", [stmt], tuple(names))  # `a, b = ...`: reached by either
        elif _is_main_block(stmt):  # runs only when the file is run (whole: see `_string_files`)
            key = add(MAIN_BLOCK, "main", [stmt])
        else:
            body.nodes.append(stmt)
            top_imports += [n for n in _walk_outside_functions(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))]
            key = MODULE_BODY
        spans.append((span_start, (stmt.end_lineno, stmt.end_col_offset), key))
    units[MODULE_BODY] = body

    docstrings = _docstring_spans(tree)
    tokens: dict[str, list] = {key: [] for key in units}
    try:
        stream = list(tokenize.tokenize(io.BytesIO(blob).readline))
    except (tokenize.TokenError, SyntaxError) as e:
        raise ReproError(f"cannot identify {path}: {e}") from e
    skip_newline = False
    last_owner = None
    for tok in stream:
        if tok.type in _DROPPED_TOKENS:
            continue
        if any(a <= tok.start and tok.end <= b for a, b in docstrings):
            skip_newline = True
            continue
        if skip_newline and tok.type == tokenize.NEWLINE:  # the docstring statement's own line end
            skip_newline = False
            continue
        skip_newline = False
        if tok.type in (tokenize.DEDENT, tokenize.NEWLINE):
            # A DEDENT sits at the next statement's first token but closes the previous one's
            # block; a NEWLINE ends the previous token's line (after a comment it lies past the
            # statement's end).
            owner = last_owner
        else:
            owner = next((key for a, b, key in spans if a <= tok.start <= b), None)
        if owner is None:
            continue
        last_owner = owner
        tokens[owner].append((tok.type,) if tok.type in _TYPE_ONLY_TOKENS else (tok.type, tok.string))
    for key, unit in units.items():
        if key not in digests:
            digests[key] = _token_digest(tokens[key])
    bound, aliases = _import_bindings([tree])
    return ParsedFile(path, units, digests, top_imports, bound, aliases)


def normalised_file_digest(path: str, blob: bytes) -> str:
    """A whole file's normalised digest (every unit's, comments, docstrings and formatting dropped)."""
    return stable_hash(parse_file(path, blob).digests, 16)


def _walk_outside_functions(node: ast.AST):
    """Every node under ``node`` that runs when ``node`` runs (function bodies excluded)."""
    todo = [node]
    while todo:
        n = todo.pop()
        yield n
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                todo.append(child)


def _module_file(module: str, read: Reader) -> str | None:
    parts = module.split(".")
    if not parts or parts[0] not in PROJECT_PACKAGES:
        return None
    base = "/".join(parts)
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if read(candidate) is not None:
            return candidate
    return None


def _imported_files(path: str, imports: list[ast.AST], read: Reader) -> set[str]:
    """Project files that ``imports`` (statements of ``path``) import, package ``__init__`` files included."""
    rel = path[:-3].split("/")
    package = rel[:-1]
    names: set[str] = set()
    for node in imports:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1] if node.level > 1 else package
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import submodule`
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = _module_file(".".join(parts[:i]), read)
            if f is not None:
                found.add(f)
    return found


_LOADS_BY_PATH = ("spec_from_file_location", "SourceFileLoader", "run_path")
_LOADS_BY_NAME = ("import_module", "run_module", "__import__")


def _string_files(path: str, nodes: list[ast.AST], read: Reader) -> set[str]:
    """Project files a unit loads by a string: ``"<name>.py"`` when it loads a file by path
    (``spec_from_file_location``...), a dotted module name when it imports by name
    (``import_module``...) or starts a process with ``-m`` (torchrun)."""
    strings, calls = set(), set()
    for node in nodes:
        for n in ast.walk(node):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and len(n.value) < 200:
                strings.add(n.value)
            elif isinstance(n, ast.Call):
                calls.add(_dotted(n.func).rsplit(".", 1)[-1])
    found = set()
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    if calls & set(_LOADS_BY_PATH):
        for s in strings:
            if s.endswith(".py") and s[:-3].isidentifier():
                found |= {c for c in (f"{folder}/{s}", f"datasets/{s}") if read(c) is not None}
    if calls & set(_LOADS_BY_NAME) or "-m" in strings:
        for s in strings:
            if "." in s and s.replace(".", "").replace("_", "").isalnum():
                f = _module_file(s, read)
                if f is not None:
                    found.add(f)
    return found


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _function_locals(fn: ast.AST) -> set[str]:
    """The names local to a function: its parameters and what its own body binds (assignment,
    loop, ``with``/``except`` targets, nested definitions), less what it declares ``global`` or
    ``nonlocal``. Names an import in the body binds are not counted local: they name another
    module's definitions, which reachability must follow."""
    a = fn.args
    names = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]}
    declared: set[str] = set()
    todo = list(fn.body) if isinstance(fn.body, list) else [fn.body]
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            todo += n.decorator_list  # evaluated here; the body is its own scope
            continue
        if isinstance(n, (ast.Lambda, *_COMPREHENSIONS)):
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            names.add(n.id)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            declared.update(n.names)
        todo += list(ast.iter_child_nodes(n))
    return names - declared


def _references(nodes: list[ast.AST], module_names: set[str]) -> set[str]:
    """Names a unit uses: every ``Name`` it loads that is not a local of an enclosing function
    (a function's parameter ``inputs`` is not ``repro.run.inputs``), and the attributes of chains
    rooted at an import-bound name that is not such a local."""
    out: set[str] = set()

    def visit(n: ast.AST, local: frozenset) -> None:
        if isinstance(n, _FUNCTIONS):
            if not isinstance(n, ast.Lambda):
                for d in n.decorator_list:
                    visit(d, local)
                if n.returns is not None:
                    visit(n.returns, local)
            for d in [*n.args.defaults, *filter(None, n.args.kw_defaults)]:
                visit(d, local)
            for arg in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs, *filter(None, [n.args.vararg, n.args.kwarg])]:
                if arg.annotation is not None:
                    visit(arg.annotation, local)
            inner = local | _function_locals(n)
            for stmt in (n.body if isinstance(n.body, list) else [n.body]):
                visit(stmt, inner)
            return
        if isinstance(n, _COMPREHENSIONS):
            targets = {t.id for g in n.generators for t in ast.walk(g.target) if isinstance(t, ast.Name)}
            inner = local | targets
            visit(n.generators[0].iter, local)  # evaluated in the enclosing scope
            for g in n.generators:
                if g is not n.generators[0]:
                    visit(g.iter, inner)
                for cond in g.ifs:
                    visit(cond, inner)
            for part in ([n.key, n.value] if isinstance(n, ast.DictComp) else [n.elt]):
                visit(part, inner)
            return
        if isinstance(n, ast.Name):
            if not isinstance(n.ctx, ast.Store) and n.id not in local:
                out.add(n.id)
            return
        if isinstance(n, ast.Attribute):
            base, chain = n, []
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in module_names and base.id not in local:
                out.update(chain)
            visit(base, local)  # a call or subscript under the chain (`a.f(x).g`) is visited there
            return
        for child in ast.iter_child_nodes(n):
            visit(child, local)

    for node in nodes:
        visit(node, frozenset())
    return out


def _import_bindings(tree_nodes: list[ast.AST]) -> tuple[set[str], dict[str, set[str]]]:
    """Names imports bind (possible module aliases) and ``alias -> original`` for ``as`` imports."""
    bound, aliases = set(), {}
    for node in tree_nodes:
        for n in ast.walk(node):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for a in n.names:
                    name = a.asname or a.name.split(".")[0]
                    bound.add(name)
                    original = a.name.rsplit(".", 1)[-1]
                    if a.asname:
                        aliases.setdefault(a.asname, set()).add(original)
                        bound.add(a.name.split(".")[0])
    return bound, aliases


def reachable_units(entry: str, whole_files: tuple[str, ...], read: Reader,
                    roots: tuple[tuple[str, str], ...] = ((CORE_RUN_FILE, CORE_RUN_ROOT),),
                    boundary: frozenset = BOUNDARY) -> dict[str, dict[str, str]]:
    """The included units, ``{file: {unit name: digest}}`` (see the module docstring)."""
    parsed: dict[str, ParsedFile] = {}
    whole = set(whole_files)
    pending = {entry, *whole_files}
    while True:
        for path in sorted(pending - set(parsed)):
            blob = read(path)
            if blob is None:
                raise ReproError(f"cannot identify the code: {path} is missing")
            parsed[path] = parse_file(path, blob)
        pending = set()
        for path, p in parsed.items():  # what importing a file runs brings its imports
            pending |= _imported_files(path, p.top_imports, read)
        if pending - set(parsed):
            continue
        module_names: set[str] = set().union(*(p.import_bound for p in parsed.values()))
        aliases: dict[str, set[str]] = {}
        for p in parsed.values():
            for k, v in p.aliases.items():
                aliases.setdefault(k, set()).update(v)
        whole |= {path for path in parsed if path.endswith("__init__.py")}
        included: set[tuple[str, str]] = set()
        referenced: set[str] = set()  # by any included unit: reaches definitions and constants
        referenced_in: dict[str, set[str]] = {path: set() for path in parsed}  # reaches a file's imports
        changed = True
        while changed:
            changed = False
            for path, p in parsed.items():
                for key, unit in p.units.items():
                    if (path, key) in included or (path, unit.name) in boundary:
                        continue
                    if (path in whole or unit.kind == "root" or (path, unit.name) in roots
                            or (unit.kind in ("def", "const") and referenced.intersection(unit.names))
                            or (unit.kind == "import" and referenced_in[path].intersection(unit.names))):
                        included.add((path, key))
                        changed = True
                        refs = _references(unit.nodes, module_names)
                        refs = refs.union(*(aliases.get(r, set()) for r in refs))
                        referenced |= refs
                        referenced_in[path] |= refs
        # what the included units import, or load by name; stop when that adds nothing
        by_name: set[str] = set()
        for path, key in included:
            nodes = parsed[path].units[key].nodes
            imports = [n for node in nodes for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            pending |= _imported_files(path, imports, read)
            by_name |= _string_files(path, nodes, read)
        pending |= by_name
        if not pending - set(parsed) and by_name <= whole:
            break
        whole |= by_name
    units: dict[str, dict[str, str]] = {}
    for path, key in sorted(included):
        if key == MODULE_BODY and not parsed[path].units[key].nodes:
            continue  # a file with no side-effecting statement: nothing of its body to identify
        units.setdefault(path, {})[key] = parsed[path].digests[key]
    return units


def files_identity(files: tuple[str, ...], read: Reader) -> str:
    """The identity of the code that ``files`` (whole) and what they reach define, with no harness
    root: for a data source that runs project code while it prepares (world_pcf's pre-training),
    so that its cache key follows that code and not the harness's bookkeeping, which cannot change
    a feature (the code identity of ``repro/environment.py`` reaches ``run.resolve`` by name)."""
    return stable_hash(reachable_units(files[0], tuple(sorted(files)), read, roots=()), 16)


def code_identity(entry: str, whole_files: tuple[str, ...], read: Reader) -> dict:
    """``fingerprint`` (the identity), ``files`` (each included file's digest of its included
    units), ``files_raw`` (their raw-byte digests, for the record) and ``units`` (per file, the
    included units' digests)."""
    units = reachable_units(entry, tuple(sorted(whole_files)), read)
    return {
        "fingerprint": stable_hash(units, 16),
        "files": {f: stable_hash(u, 16) for f, u in units.items()},
        "files_raw": {f: raw_digest(read(f)) for f in units},
        "units": units,
    }

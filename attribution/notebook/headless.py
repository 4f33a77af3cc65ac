"""Headless rendering (nbclient, HTML export) and ``attribution notebook render|list``."""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attribution.notebook.connection import NotebookError, one_line, settings

if TYPE_CHECKING:
    from nbformat import NotebookNode


# Shipped as package data (``attribution/notebooks``, mapped from the repo's
# ``notebooks/`` at build time) or, in a checkout, at the repo root: one source.
_PACKAGE = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = next(
    (d for d in (_PACKAGE / "notebooks", _PACKAGE.parent / "notebooks")
     if any(d.glob("*.ipynb"))),
    _PACKAGE.parent / "notebooks")
EXTRA_HINT = "pip install 'attribution[notebooks]'"
RENDER_TIMEOUT = 600   # seconds per cell when rendering headless

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

# --------------------------------------------------------------------------- headless rendering


def resolve_notebook(name: str | Path) -> Path:
    """A notebook path, or a bare name (``02_fleet_dossier``) found in ``notebooks/``."""
    path = Path(name)
    candidates = [path, NOTEBOOKS_DIR / path, NOTEBOOKS_DIR / f"{path}.ipynb"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NotebookError(f"no notebook {str(name)!r} (looked in . and {NOTEBOOKS_DIR})")


def _is_parameters(cell: Any, tag: str = "parameters") -> bool:
    return cell.get("cell_type") == "code" and tag in cell.get("metadata", {}).get("tags", [])


def notebook_parameters(nb: NotebookNode) -> dict[str, Any]:
    """Names and default values assigned in the cell tagged ``parameters``."""
    cell = next((c for c in nb.cells if _is_parameters(c)), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise NotebookError(f"the parameters cell is not plain Python: {exc}") from exc
    out: dict[str, Any] = {}
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value else [])
        value = getattr(stmt, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                try:
                    out[target.id] = ast.literal_eval(value)
                except ValueError:
                    out[target.id] = None
    return out


def _literal(name: str, value: Any) -> str:
    """``name = value`` as code; only plain literals (a parameter must not carry code)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise NotebookError(f"parameter {name} must be a plain literal (str, number, bool, "
                            f"None, list, dict), not {type(value).__name__}")
    return f"{name} = {text}"


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> NotebookNode:
    """Add an ``injected-parameters`` cell after the ``parameters`` cell (papermill-style).

    Unknown names are refused: a typo would otherwise silently run the defaults.
    """
    import nbformat

    declared = notebook_parameters(nb)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise NotebookError(f"no parameter {', '.join(unknown)} in this notebook "
                            f"(parameters: {', '.join(declared) or 'none'})")
    nb.cells = [c for c in nb.cells if not _is_parameters(c, "injected-parameters")]
    if not parameters:
        return nb
    source = "# Parameters\n" + "\n".join(_literal(k, v) for k, v in parameters.items()) + "\n"
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    index = next((i + 1 for i, c in enumerate(nb.cells) if _is_parameters(c)), 0)
    nb.cells.insert(index, cell)
    return nb


def _kernel_manager(kernel_name: str) -> Any:
    """A kernel manager that runs ``kernel_name`` ('python3': this very interpreter).

    Only ipykernel's own spec is offered for python3, so a stray user-level
    kernelspec cannot run the notebook in an environment without ``attribution``.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[]) if kernel_name == "python3" else KernelSpecManager()
    return KernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)


def execute(notebook: str | Path, parameters: Mapping[str, Any] | None = None, *,
            timeout: int = RENDER_TIMEOUT, kernel_name: str = "python3",
            on_error: Callable[[NotebookNode], None] | None = None) -> NotebookNode:
    """Execute a notebook headless (in its own folder) and return it with its outputs.

    A failing cell raises ``NotebookError`` naming the cell; ``on_error`` first
    gets the partly executed notebook (to save what ran).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = resolve_notebook(notebook)
    nb = inject_parameters(nbformat.read(path, as_version=4), dict(parameters or {}))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            km=_kernel_manager(kernel_name),
                            # the kernel's own log (e.g. "running over TCP") is not the report's
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        if on_error is not None:
            on_error(nb)
        raise NotebookError(f"{path.name}: {_failed_cell(nb) or one_line(exc)}") from exc
    return nb


def _failed_cell(nb: NotebookNode) -> str | None:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {index} failed: {output.get('ename')}: {output.get('evalue')}"
    return None


def to_html(nb: NotebookNode, *, no_input: bool = False) -> str:
    """The notebook as one self-contained HTML page (figures embedded as PNG)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = no_input
    exporter.exclude_input_prompt = no_input
    body, _ = exporter.from_notebook_node(nb)
    return body


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def render(notebook_path: str | Path, out_html: str | Path,
           parameters: Mapping[str, Any] | None = None, *, no_input: bool = False,
           timeout: int = RENDER_TIMEOUT) -> NotebookNode:
    """Execute a notebook with ``parameters`` and write it as HTML with its outputs.

    On a failing cell the HTML is still written (it shows the error), then
    ``NotebookError`` is raised.
    """
    out = Path(out_html)

    def save_partial(nb: NotebookNode) -> None:
        _write_atomic(out, to_html(nb, no_input=no_input))

    nb = execute(notebook_path, parameters, timeout=timeout, on_error=save_partial)
    if parameters:  # the page title says which fleet / organization / account it is about
        shown = ", ".join(f"{k}={v}" for k, v in parameters.items())
        nb.metadata["title"] = f"{_title(nb) or Path(notebook_path).stem} ({shown})"
    _write_atomic(out, to_html(nb, no_input=no_input))
    return nb


# --------------------------------------------------------------------------- command line


def _cli_value(text: str, default: Any) -> Any:
    """A ``-p`` value typed after the notebook's default (ids stay text even if numeric)."""
    if text in ("None", "null") and not isinstance(default, str):
        return None
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise NotebookError(f"expected true or false, got {text!r}")
    if isinstance(default, int | float):
        try:
            return type(default)(text)
        except ValueError:
            raise NotebookError(f"expected a {type(default).__name__}, got {text!r}") from None
    if isinstance(default, list | dict):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotebookError(f"expected JSON, got {text!r}") from exc
    return text


def _render_command(args: argparse.Namespace) -> int:
    """``notebook render``: 0 written, 2 bad usage or no Neo4j settings, 1 a cell failed."""
    try:
        for module in ("nbformat", "nbclient", "nbconvert", "ipykernel"):
            try:
                __import__(module)
            except ImportError:
                raise NotebookError(f"rendering needs the notebook extra ({module} is not "
                                    f"installed): {EXTRA_HINT}") from None
        path = resolve_notebook(args.notebook)
        defaults = notebook_parameters(_read_plain(path))
        params: dict[str, Any] = {}
        for name, text in args.parameter or []:
            if name not in defaults:
                raise NotebookError(f"{path.name} has no parameter {name} "
                                    f"(parameters: {', '.join(defaults) or 'none'})")
            try:
                params[name] = _cli_value(text, defaults[name])
            except NotebookError as exc:
                raise NotebookError(f"parameter {name}: {exc}") from None
        settings()
    except NotebookError as exc:
        print(f"notebook render: {exc}", file=sys.stderr)
        return 2
    try:
        render(path, args.out, params, no_input=args.no_input, timeout=args.timeout)
    except NotebookError as exc:
        print(f"notebook render: {exc} (partial HTML in {args.out})"
              if Path(args.out).exists() else f"notebook render: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"notebook render: wrote {args.out}")
    return 0


def _title(nb: NotebookNode) -> str:
    """The notebook's ``metadata.title`` (also the HTML page title), else its first heading."""
    title = nb.metadata.get("title")
    if title:
        return str(title)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


class _Plain(dict[str, Any]):
    """A notebook's JSON with attribute access, as nbformat gives it: reading a
    notebook's title and parameters needs no notebook extra."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _read_plain(path: Path) -> Any:
    """An ``.ipynb`` (format 4) read as plain JSON, sources joined like nbformat's."""
    def node(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return _Plain({k: node(v, k) for k, v in value.items()})
        if isinstance(value, list):
            return "".join(value) if key == "source" else [node(v) for v in value]
        return value

    try:
        return node(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise NotebookError(f"cannot read {path}: {exc}") from None


def _list_command(args: argparse.Namespace) -> int:
    """``notebook list``: each notebook with its title and parameters (no extra needed)."""
    folder = Path(args.dir) if args.dir else NOTEBOOKS_DIR
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        print(f"notebook list: no notebooks in {folder}", file=sys.stderr)
        return 2
    for path in paths:
        nb = _read_plain(path)
        params = ", ".join(f"{k}={v!r}" for k, v in notebook_parameters(nb).items())
        print(f"{path.stem:<22} {_title(nb)}")
        print(f"{'':<22} parameters: {params or 'none'}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``notebook render`` and ``notebook list`` to the ``attribution`` command."""
    parser = subparsers.add_parser(
        "notebook", help="render the analysts' notebooks headless, or list them",
        description="The analysts' Jupyter notebooks (notebooks/), read from the Neo4j of "
        "NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD / NEO4J_DATABASE.")
    sub = parser.add_subparsers(dest="notebook_command", required=True, metavar="COMMAND")
    render_p = sub.add_parser(
        "render", help="execute a notebook and write it as HTML with its outputs",
        description="Execute NOTEBOOK headless (parameters injected after its cell tagged "
        "'parameters') and write HTML with every table and figure. Exit 0 written, 1 a cell "
        "failed (the HTML shows it), 2 bad usage.")
    render_p.add_argument("notebook", help="a .ipynb path, or a name in notebooks/ "
                          "such as 02_fleet_dossier")
    render_p.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    render_p.add_argument("-p", "--parameter", nargs=2, action="append",
                          metavar=("NAME", "VALUE"),
                          help="set a parameter (typed like its default; repeatable)")
    render_p.add_argument("--no-input", action="store_true",
                          help="leave the code out of the HTML (for readers, not analysts)")
    render_p.add_argument("--timeout", type=int, default=RENDER_TIMEOUT,
                          help=f"seconds per cell (default {RENDER_TIMEOUT})")
    render_p.add_argument("--quiet", action="store_true", help="print nothing on success")
    render_p.set_defaults(handler=_render_command)
    list_p = sub.add_parser("list", help="the notebooks with their titles and parameters")
    list_p.add_argument("--dir", default=None, help=f"folder (default {NOTEBOOKS_DIR})")
    list_p.set_defaults(handler=_list_command)

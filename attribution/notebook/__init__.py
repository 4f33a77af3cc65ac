"""Helpers for the analysts' Jupyter notebooks (``notebooks/``): Neo4j in, polars out.

The package is split by what each part does: ``connection`` (the driver, from
``NEO4J_*``), ``library`` (notebook-only named queries), ``frames`` (running
queries read-only, rows into masked frames), ``display`` (shortcuts and
drawings), ``magic`` (``%%cypher``) and ``headless`` (headless rendering and the
``attribution notebook`` command). Everything a notebook uses is re-exported here.

Notebooks hold no credentials and no connection code: ``connect()`` reads the
same ``NEO4J_*`` variables as ``attribution run``. Everything they read goes
through read transactions: the named queries of ``queries/`` (``query``), a
few notebook-only queries written here in the same header format
(``NOTEBOOK_QUERIES``; candidates for ``queries/``), and ad-hoc Cypher
(``cypher`` and the ``%%cypher`` cell magic), which is first checked with
``EXPLAIN`` to be read-only and then run in a read transaction (the server
refuses writes there as well).

In a notebook::

    %load_ext attribution.notebook
    from attribution import notebook as nb
    fleets = nb.query("fleet_overview", limit=100)

    %%cypher members
    MATCH (a:Account)-[:MEMBER_OF]->(f:Fleet {fleet_id: $fleet_id}) RETURN a.account_id

Headless: ``render(path, out_html, {"fleet_id": "F..."})`` executes a notebook
with nbclient (parameters injected after the cell tagged ``parameters``, as
papermill does) and exports HTML with its outputs; ``attribution notebook
render|list`` on the command line (see ``headless.register``).
"""

from attribution.notebook.connection import (
    QUERY_TIMEOUT,
    NotebookError,
    close,
    connect,
    settings,
)
from attribution.notebook.display import (
    capability_mix,
    capability_names,
    current_run,
    draw_graph,
    duration_text,
    md_escape,
    rank_fleets,
    top_fleet,
)
from attribution.notebook.frames import cypher, mask_entity, masked, masked_labels, query, to_frame
from attribution.notebook.headless import (
    NOTEBOOKS_DIR,
    RENDER_TIMEOUT,
    execute,
    inject_parameters,
    notebook_parameters,
    register,
    render,
    resolve_notebook,
    to_html,
)
from attribution.notebook.library import NOTEBOOK_QUERIES, named_query, notebook_queries
from attribution.notebook.magic import cell_parameters, load_ipython_extension, run_cell

__all__ = [
    "NOTEBOOKS_DIR", "NOTEBOOK_QUERIES", "QUERY_TIMEOUT", "RENDER_TIMEOUT", "NotebookError",
    "capability_mix", "capability_names", "cell_parameters", "close", "connect", "current_run",
    "cypher", "draw_graph", "duration_text", "execute", "inject_parameters",
    "load_ipython_extension", "mask_entity", "masked", "masked_labels", "md_escape",
    "named_query", "notebook_parameters", "notebook_queries", "query", "rank_fleets",
    "register", "render", "resolve_notebook", "run_cell", "settings", "to_frame", "to_html",
    "top_fleet",
]

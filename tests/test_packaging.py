"""A plain (non-editable) install: what ships in the wheel and what works without extras.

The query library and the notebooks live once at the top of the repository and
are mapped into the package at build time; a checkout without symlinks and a
wheel installed elsewhere must both find them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
for extra in ("nbformat", "nbclient", "nbconvert", "ipykernel", "matplotlib"):
    sys.modules[extra] = None  # the notebook extra is not installed
import attribution
from attribution.cli import main
from attribution.store.named_queries import load_queries, queries_dir
listed = main(["notebook", "list"])
render = main(["notebook", "render", "01_triage", "--out", "page.html"])
print(json.dumps({"package": attribution.__file__, "queries": str(queries_dir()),
                  "names": sorted(load_queries()), "list": listed, "render": render}))
"""


def test_a_wheel_ships_the_queries_and_notebooks_and_lists_without_the_extra(tmp_path: Path
                                                                            ) -> None:
    import json

    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w",
                    str(tmp_path / "wheel")], check=True, timeout=600)
    wheel = next((tmp_path / "wheel").glob("attribution-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, env={"PYTHONPATH": str(target),
                                                          "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["package"].startswith(str(target))       # the installed copy, not the checkout
    assert result["queries"].startswith(str(target))
    assert result["names"] == sorted(p.stem for p in (ROOT / "queries").glob("*.cypher"))
    assert result["list"] == 0
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert any(line.startswith(nb.stem) for line in lines), nb.stem
    assert result["render"] == 2 and "attribution[notebooks]" in done.stderr
    # The calibration map of the engine's confidence ships with the engine.
    assert (target / "attribution" / "engine" / "calibration.json").is_file()
    assert not (tmp_path / "page.html").exists()


def test_the_package_holds_no_symlink() -> None:
    links = [p for p in (ROOT / "attribution").rglob("*") if p.is_symlink()]
    assert links == []

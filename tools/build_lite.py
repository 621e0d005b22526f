"""Build the course's JupyterLite site: the lessons and assignments in the browser, no install.

Usage: python tools/build_lite.py [OUTPUT]   (default: build/lite/, ignored by git; `make lite`)

Everything the site needs comes from PyPI and npm, and nothing is fetched from a CDN, at build
or at run time:
- Pyodide's core files from the npm package of the version the Pyodide kernel targets
  (`npm pack pyodide@<version>`, or the same tarball from the npm registry where npm is missing),
  with its lock file trimmed to the one wheel shipped (micropip);
- the pure-Python wheels the kernel and the lessons need, resolved by pip for the kernel's Python;
- the course's own packages (session_visualizer, autograder, ...: those pyproject.toml packages)
  as one wheel built here;
- the PyPI fallback of the kernel's `%pip` switched off (lite/jupyter-lite.json).
Downloads are cached in build/lite-cache/, so a rebuild needs no network.

The site's copies of the lessons (notebooks/) and of the assignments' student versions
(release/<name>/) run on the Pyodide kernel, with one set-up cell added after the title that
installs the course's wheel in the browser and moves the kernel's working folder into memory (it
does nothing in any other kernel). A notebook whose metadata carries the tag `lite-skip` (it needs
what Pyodide lacks: threads, say) is copied as it is, with its stored outputs and no set-up cell.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import urllib.request
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import nbformat
from jupyterlite_pyodide_kernel.constants import (
    PYODIDE_KERNEL_NPM_NAME,
    PYODIDE_PYTHON_VERSION,
    PYODIDE_VERSION,
)

REPOSITORY = Path(__file__).resolve().parents[1]
BUILD = REPOSITORY / "build"
CACHE = BUILD / "lite-cache"
NPM_REGISTRY = "https://registry.npmjs.org"
CONFIG = REPOSITORY / "lite" / "jupyter-lite.json"
CONTENT_FOLDERS = ("notebooks", "release")
KERNEL_EXTENSION = Path(sys.prefix, "share/jupyter/labextensions", PYODIDE_KERNEL_NPM_NAME)
SKIP_TAG = "lite-skip"
SETUP_TAG = "lite-setup"
# The course's requirements that the browser needs too (bounds read from pyproject.toml).
BROWSER_REQUIREMENTS = ("sqlalchemy", "ipywidgets")
# What the Pyodide kernel's own wheels (pyodide_kernel, ipykernel) require, beyond the lessons.
KERNEL_REQUIREMENTS = ("ipython", "comm")
PYODIDE_KERNELSPEC = {"name": "python", "display_name": "Python (Pyodide)", "language": "python"}
SETUP_SOURCE = """\
# Added by the course's browser site (JupyterLite); in any other kernel this cell does nothing.
# It installs the course's packages from the site, and keeps the files the notebook writes (an
# assignment's SQLite database) in the kernel's memory: SQLite cannot use a file stored in the
# site's file browser (the browser's storage).
import sys

if sys.platform == "emscripten":
    import os

    %pip install {distribution}
    os.chdir(os.path.expanduser("~"))"""
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # wheel entries get a fixed date: the same sources, the same wheel


def _pyproject() -> dict:
    return tomllib.loads((REPOSITORY / "pyproject.toml").read_text())


def _project() -> dict:
    return _pyproject()["project"]


def course_packages() -> list[str]:
    """The course's own packages: those pyproject.toml's setuptools `include` patterns name."""
    patterns = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(
        folder.name
        for folder in REPOSITORY.iterdir()
        if (folder / "__init__.py").exists() and any(fnmatch(folder.name, p) for p in patterns)
    )


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def browser_requirements() -> list[str]:
    """The course's requirements the browser needs, with pyproject.toml's bounds, extras dropped."""
    return [
        re.sub(r"\[[^\]]*\]", "", requirement)
        for requirement in _project()["dependencies"]
        if _requirement_name(requirement) in BROWSER_REQUIREMENTS
    ]


def _run(command: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=cwd)


def pyodide_tarball() -> Path:
    """The npm package `pyodide@PYODIDE_VERSION`, fetched once into the cache.

    With npm, `npm pack`; without it, the same tarball from the npm registry, checked against
    the integrity digest the registry publishes for it.
    """
    tarball = CACHE / f"pyodide-{PYODIDE_VERSION}.tgz"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    if shutil.which("npm"):
        _run(["npm", "pack", f"pyodide@{PYODIDE_VERSION}", "--pack-destination", str(CACHE)])
        return tarball
    with urllib.request.urlopen(f"{NPM_REGISTRY}/pyodide/{PYODIDE_VERSION}") as response:
        dist = json.load(response)["dist"]
    with urllib.request.urlopen(dist["tarball"]) as response:
        data = response.read()
    algorithm, digest = dist["integrity"].split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, data).digest()).decode() != digest:
        raise RuntimeError(f"{dist['tarball']} does not match its integrity digest")
    tarball.write_bytes(data)
    return tarball


def pyodide_core(destination: Path) -> dict:
    """Unpack the npm package `pyodide@PYODIDE_VERSION` into `destination`; return its lock."""
    tarball = pyodide_tarball()
    destination.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
        for member in archive.getmembers():
            name = member.name.removeprefix("package/")
            if member.isfile() and not name.endswith((".map", ".d.ts", ".html", ".md")):
                (destination / name).write_bytes(archive.extractfile(member).read())
    return json.loads((destination / "pyodide-lock.json").read_text())


def download_wheels(requirements: list[str]) -> list[Path]:
    """Pure-Python wheels of `requirements` and their dependencies, for the kernel's Python.

    Cached: pip runs only when the requirement list changed since the last download.
    """
    folder = CACHE / "wheels"
    stamp = folder / "requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(folder, ignore_errors=True)
        _run([
            sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(folder),
            "--only-binary=:all:", "--platform", "any", "--implementation", "py",
            "--python-version", PYODIDE_PYTHON_VERSION, "--abi", "none", *requirements,
        ])  # fmt: skip
        stamp.write_text(wanted)
    return sorted(folder.glob("*.whl"))


def _wheel_distribution(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0].lower().replace("_", "-")


def kernel_wheels() -> set[str]:
    """The distributions whose wheels the Pyodide kernel's extension ships (its pypi/all.json)."""
    index = KERNEL_EXTENSION / "static" / "pypi" / "all.json"
    return {_requirement_name(name) for name in json.loads(index.read_text())}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def trim_lock(lock: dict, micropip_wheel: Path, pyodide_dir: Path) -> None:
    """Ship micropip (the kernel loads it first) and make the lock name that wheel alone."""
    entry = lock["packages"]["micropip"]
    shutil.copy2(micropip_wheel, pyodide_dir / micropip_wheel.name)
    entry.update(file_name=micropip_wheel.name, sha256=_sha256(micropip_wheel.read_bytes()))
    lock["packages"] = {"micropip": entry}
    (pyodide_dir / "pyodide-lock.json").write_text(json.dumps(lock, indent=1))


def _wheel_name(distribution: str) -> str:
    return re.sub(r"[-_.]+", "_", distribution)


def course_wheel(destination: Path) -> str:
    """Write the wheel of the course's packages for the browser; return its distribution name.

    Its metadata requires only what the browser needs (the lessons' SQLAlchemy and ipywidgets),
    not the instructor's tools (JupyterLab, nbgrader), which Pyodide cannot run.
    """
    project = _project()
    name, version = project["name"], project["version"]
    dist_info = f"{_wheel_name(name)}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in course_packages():
        for path in sorted((REPOSITORY / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[path.relative_to(REPOSITORY).as_posix()] = path.read_bytes()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        f"Version: {version}",
        f"Summary: {project['description']} (its packages, for the browser)",
        *(f"Requires-Dist: {requirement}" for requirement in browser_requirements()),
    ]
    files[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    wheel = ["Wheel-Version: 1.0", "Generator: tools/build_lite.py", "Root-Is-Purelib: true"]
    files[f"{dist_info}/WHEEL"] = ("\n".join([*wheel, "Tag: py3-none-any"]) + "\n").encode()
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for path, data in files.items()
    ]
    files[f"{dist_info}/RECORD"] = ("\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(zipfile.ZipInfo(path, ZIP_DATE), data, zipfile.ZIP_DEFLATED)
    (destination / f"{_wheel_name(name)}-{version}-py3-none-any.whl").write_bytes(buffer.getvalue())
    return name


def is_skipped(notebook: nbformat.NotebookNode) -> bool:
    """A notebook tagged `lite-skip` (notebook-level metadata.tags) does not run in the browser."""
    return SKIP_TAG in notebook.metadata.get("tags", [])


def site_copy(notebook: nbformat.NotebookNode, distribution: str) -> nbformat.NotebookNode:
    """The site's copy of a notebook: the Pyodide kernel and, unless skipped, the set-up cell."""
    notebook.metadata["kernelspec"] = dict(PYODIDE_KERNELSPEC)
    if not is_skipped(notebook):
        setup = nbformat.v4.new_code_cell(
            SETUP_SOURCE.format(distribution=distribution), metadata={"tags": [SETUP_TAG]}
        )
        notebook.cells.insert(1, setup)  # after the title cell
    return notebook


def copy_contents(destination: Path, distribution: str) -> list[str]:
    """Copy the lessons and assignments into `destination`; return the skipped notebooks."""
    skipped = []
    for folder in CONTENT_FOLDERS:
        for path in sorted((REPOSITORY / folder).rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            relative = path.relative_to(REPOSITORY)
            notebook = nbformat.read(path, as_version=4)
            if is_skipped(notebook):
                skipped.append(relative.as_posix())
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(site_copy(notebook, distribution), target)
    return skipped


def build(output: Path) -> None:
    """Assemble the lite directory from the cache and run `jupyter lite build` into `output`.

    The lite directory (the build's input, made afresh each time) is `output`'s sibling with
    the suffix `-src`: build/lite-src/ for the default output.
    """
    lite_dir = output.with_name(f"{output.name}-src")
    shutil.rmtree(lite_dir, ignore_errors=True)
    shutil.rmtree(output, ignore_errors=True)
    pypi = lite_dir / "pypi"
    pypi.mkdir(parents=True)
    shutil.copy2(CONFIG, lite_dir / "jupyter-lite.json")

    lock = pyodide_core(lite_dir / "static" / "pyodide")
    micropip = f"micropip=={lock['packages']['micropip']['version']}"
    wheels = download_wheels([*browser_requirements(), *KERNEL_REQUIREMENTS, micropip])
    (micropip_wheel,) = [wheel for wheel in wheels if wheel.name.startswith("micropip-")]
    trim_lock(lock, micropip_wheel, lite_dir / "static" / "pyodide")
    kernel_provides = kernel_wheels()  # its stand-in widgetsnbextension, say
    for wheel in wheels:
        if wheel != micropip_wheel and _wheel_distribution(wheel) not in kernel_provides:
            shutil.copy2(wheel, pypi / wheel.name)
    distribution = course_wheel(pypi)

    skipped = copy_contents(lite_dir / "files", distribution)
    print("lite-skip (shown with their stored outputs):", ", ".join(skipped) or "none")
    _run(
        [
            str(Path(sys.executable).with_name("jupyter")), "lite", "build",
            "--lite-dir", str(lite_dir), "--contents", str(lite_dir / "files"),
            "--output-dir", str(output), "--apps", "lab", "--no-sourcemaps",
            "--no-unused-shared-packages",
        ],
        cwd=lite_dir,
    )  # fmt: skip


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else BUILD / "lite")

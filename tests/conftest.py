import subprocess
import sys

import pytest

from scenetools.convert import convert
from scenetools.sources.synthetic import SyntheticSource


def run_command(module: str, *args, cwd=None):
    """Run a scenetools command as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", f"scenetools.cli.{module}", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="session")
def synthetic_file(tmp_path_factory):
    """A small synthetic scene file: 12 scenes x 6 views of 24 x 24 pixels."""
    path = tmp_path_factory.mktemp("synthetic") / "small.h5"
    convert(SyntheticSource(scenes=12, views=6, size=24, seed=3), path, codec="raw")
    return path

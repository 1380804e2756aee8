import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    """The command line built from this repository (`cargo build --release` builds it;
    GDFLOW_BIN names another): the Python package must agree with it value for value."""
    binary = Path(os.environ.get("GDFLOW_BIN", ROOT / "target" / "release" / "gdflow"))
    if not binary.is_file():
        pytest.fail(
            f"no gdflow binary at {binary}: run `cargo build --release` first (or set GDFLOW_BIN)"
        )

    def call(*args, check=True):
        return subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, check=check
        )

    return call

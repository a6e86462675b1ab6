"""Test configuration: quiet threads, one body template per session."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def template():
    """The Anny template, built once per machine (cached in $PERENNIAL_CACHE) and per session."""
    from perennial.body.anny import load_template

    return load_template("anny")

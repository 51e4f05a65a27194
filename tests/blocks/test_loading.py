"""Loading a block by name: a missing one says which, and how to create it."""

from __future__ import annotations

import pytest

from blocks.loading import MissingBlock, load_block
from blocks.oci import OciCredentials

pytestmark = pytest.mark.integration


def test_a_missing_block_says_which_and_how_to_create_it():
    expected = r"OCI Credentials block named 'nope'.*python -m deployments\.blocks"
    with pytest.raises(MissingBlock, match=expected):
        load_block(OciCredentials, "nope")

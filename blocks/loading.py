"""Load a saved block by name, failing with what to do when it is missing."""

from __future__ import annotations

from typing import TypeVar

from prefect.blocks.core import Block

B = TypeVar("B", bound=Block)


class MissingBlock(RuntimeError):
    """A block a flow needs has not been saved."""


def load_block(block_cls: type[B], name: str) -> B:
    """block_cls.load(name), or MissingBlock naming the block and how to create it."""
    try:
        return block_cls.load(name)
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise
        raise MissingBlock(
            f"No {block_cls.get_block_type_name()} block named '{name}' on the Prefect server: "
            f"create it with `python -m deployments.blocks` (its settings in .env) or in the "
            f"UI under Blocks"
        ) from None

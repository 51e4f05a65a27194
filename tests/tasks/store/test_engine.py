"""The store's engine waits for a data node it cannot reach yet, and only for that."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from tests import datanode
from tasks.store.engine import CONNECT_PATIENCE_S, get_engine

pytestmark = pytest.mark.skipif(bool(datanode.available()), reason=str(datanode.available()))


@pytest.fixture(scope="module")
def cluster():
    with datanode.pg_cluster() as started:
        started.create_database("engine_patience")
        yield started


def test_a_connection_waits_for_a_data_node_that_comes_back(cluster):
    """A restart or a short network cut costs a wait, not the run (tasks/store/engine.py)."""
    engine = get_engine(cluster.url("engine_patience"))
    engine.dispose()
    cluster.down()
    back = threading.Timer(4, cluster.up)
    began = time.monotonic()
    back.start()
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        back.join()
    assert 3 < time.monotonic() - began < CONNECT_PATIENCE_S


def test_a_database_that_does_not_exist_fails_at_once_and_says_which(cluster):
    engine = get_engine(cluster.url("no_such_store"))
    began = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="no_such_store"):
        with engine.connect():
            pass
    assert time.monotonic() - began < 5

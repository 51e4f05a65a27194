"""The Redis server to back up: a label without the password, local or remote, its keyspace."""

from __future__ import annotations

from pydantic import SecretStr

from tasks.backups.redis.target import RedisTarget, parse_keyspace


def test_the_label_shows_host_and_port_never_the_password():
    target = RedisTarget(SecretStr("redis://:hunter2-pw@10.0.0.7:6380/0"))
    assert target.label == "10.0.0.7:6380" and not target.is_local
    assert RedisTarget(SecretStr("redis://localhost/0")).label == "localhost:6379"
    assert RedisTarget(SecretStr("redis://localhost/0")).is_local


def test_parse_keyspace_reads_the_key_count_of_each_database():
    info = {"db0": {"keys": 12, "expires": 1}, "db9": {"keys": 300, "expires": 0}}
    assert parse_keyspace(info) == {"db0": 12, "db9": 300}

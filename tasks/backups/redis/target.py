"""The Redis server to back up: its URL kept secret, a label safe to show, and its keyspace."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class RedisTarget:
    """One Redis server; the URL may carry a password so it stays secret, the label does not."""

    url: SecretStr

    @property
    def parts(self):
        return urlsplit(self.url.get_secret_value())

    @property
    def host(self) -> str:
        return self.parts.hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return self.parts.port or 6379

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.parts.scheme == "unix" or self.host in _LOCAL_HOSTS

    def client(self, timeout_s: float = 30.0):
        import redis

        return redis.Redis.from_url(
            self.url.get_secret_value(), socket_timeout=timeout_s, socket_connect_timeout=10
        )


def parse_keyspace(info: dict) -> dict[str, int]:
    """INFO keyspace -> {"db0": keys, ...}."""
    return {db: int(v["keys"]) for db, v in info.items() if db.startswith("db")}

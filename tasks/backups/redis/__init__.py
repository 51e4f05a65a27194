"""Redis backups: the server (target), an RDB snapshot, a scratch redis-server, verification."""

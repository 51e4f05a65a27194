#!/usr/bin/env bash
# `make down`: stop exactly the processes `make up` started (by their recorded pids).
set -uo pipefail
cd "$(dirname "$0")/../.."
PIDS=.prefect/pids
[ -d "$PIDS" ] || { echo "nothing to stop"; exit 0; }
# Workers first, so no run is picked up by a worker whose server is going away.
for file in $(ls "$PIDS"/worker-*.pid 2>/dev/null) "$PIDS/server.pid"; do
  [ -f "$file" ] || continue
  pid=$(cat "$file"); name=$(basename "$file" .pid)
  if kill -0 "$pid" 2>/dev/null; then
    # Each was started with setsid: its pid is its process group, which takes its children.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    echo "stopped $name (pid $pid)"
  fi
  rm -f "$file"
done

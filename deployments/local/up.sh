#!/usr/bin/env bash
# `make up`: the whole system on this machine. A Prefect server (embedded SQLite under
# ./.prefect), every work pool as a local process pool served by a local worker, the market
# store migrated, blocks registered, every deployment in prefect.yaml deployed with its triggers.
# Running it again starts only what is not running; `make down` stops what this started.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PORT=${INVESTFLOW_PREFECT_PORT:-4200}
STATE=$ROOT/.prefect
mkdir -p "$STATE/pids" "$STATE/logs"

export PREFECT_HOME=$STATE
export PREFECT_API_URL=${PREFECT_API_URL:-http://127.0.0.1:$PORT/api}
export PREFECT_UI_URL=${PREFECT_UI_URL:-http://127.0.0.1:$PORT}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# Flow runs change into this folder before importing their entrypoint (prefect.yaml pull step).
export INVESTFLOW_CODE_DIR=$ROOT
export INVESTFLOW_UI_URL=$PREFECT_UI_URL
# Workers ask for new runs every 5 s (Prefect: 10 s), so alerts and triggered runs start fast.
export PREFECT_WORKER_QUERY_SECONDS=${PREFECT_WORKER_QUERY_SECONDS:-5}
BIN=$ROOT/.venv/bin

alive() { [ -f "$STATE/pids/$1.pid" ] && kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }

start() {  # start NAME COMMAND...: run in the background, record its pid, unless running
  local name=$1; shift
  if alive "$name"; then echo "  $name already running (pid $(cat "$STATE/pids/$name.pid"))"; return; fi
  setsid nohup "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
  echo "  started $name (pid $!), log: .prefect/logs/$name.log"
}

echo "Prefect server"
start server "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT"
for _ in $(seq 1 120); do
  if curl -fsS "$PREFECT_API_URL/health" >/dev/null 2>&1; then break; fi
  alive server || { echo "the server stopped; see .prefect/logs/server.log"; tail -20 "$STATE/logs/server.log"; exit 1; }
  sleep 1
done
curl -fsS "$PREFECT_API_URL/health" >/dev/null || { echo "server not healthy after 120 s"; exit 1; }

echo "Market store, rate limits, work pools, blocks"
"$BIN/python" -m deployments.bootstrap --local all

echo "Deployments (with their event triggers)"
"$BIN/prefect" --no-prompt deploy --all

echo "Workers"
for pool in $("$BIN/python" -m deployments.bootstrap pool-names); do
  start "worker-$pool" "$BIN/prefect" worker start --pool "$pool" --type process \
    --name "local-$pool"
done

cat <<TXT

investflow is up.
  UI:        $PREFECT_UI_URL
  API:       $PREFECT_API_URL   (export PREFECT_API_URL=$PREFECT_API_URL in your shell)
  Run one:   PREFECT_API_URL=$PREFECT_API_URL .venv/bin/prefect deployment run 'us-prices/us-prices' --param 'symbols=["AAPL"]'
  Stop all:  make down
TXT

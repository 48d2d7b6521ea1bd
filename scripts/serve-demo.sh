#!/usr/bin/env bash
# The quick start's main job: `ironcage serve` with its embedded defaults (SQLite store, local sandboxes, the
# egress gateway), a short demo against its HTTP API with curl, then the server keeps running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${IRONCAGE_PORT:-3000}"
state="${IRONCAGE_STATE_DIR:-$(node --input-type=module -e \
  "import('./dist/src/egress/services.js').then((m) => console.log(m.defaultStateDir()))")}"
api="http://127.0.0.1:$port"

node dist/bin/main.js serve --port "$port" --state-dir "$state" --log-level warn &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT INT TERM
for _ in $(seq 100); do
  curl -sf "$api/ready" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "ironcage serve did not start (is port $port free? set IRONCAGE_PORT)" >&2; exit 1; }
  sleep 0.1
done

key="${IRONCAGE_ADMIN_KEY:-$(cat "$state/admin-key" 2>/dev/null || true)}"
if [ -z "$key" ]; then
  echo "No admin key: $state/admin-key is gone and IRONCAGE_ADMIN_KEY is unset; skipping the API demo." >&2
else
  call() { # METHOD PATH [JSON BODY]
    curl -sS -X "$1" "$api$2" -H "Authorization: Bearer $key" -H 'content-type: application/json' ${3:+-d "$3"}
  }
  field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
  echo
  echo "== the HTTP API ($api), as curl sees it"
  id=$(call POST /v1/sandboxes '{"policy":{"network":{"mode":"proxy","allow":["pypi.org"]}}}' | field "['id']")
  echo "POST /v1/sandboxes                      -> sandbox $id (network: only pypi.org, through its proxy)"
  out=$(call POST "/v1/sandboxes/$id/commands" '{"cmd":"echo hello from $(hostname); id -un"}' | field "['stdout']")
  echo "POST .../commands  echo; id -un          -> $(echo "$out" | tr '\n' ' ')"
  code=$(call POST "/v1/sandboxes/$id/commands" \
    '{"cmd":"curl -s -o /dev/null -w %{http_code} http://example.com/"}' | field "['stdout']")
  echo "POST .../commands  curl example.com      -> HTTP $code (refused by the egress policy)"
  events=$(call GET "/v1/sandboxes/$id/network/events" | field "['events'][-1]['rule']")
  echo "GET  .../network/events                  -> last event: denied by rule $events"
  call DELETE "/v1/sandboxes/$id" >/dev/null
  echo "DELETE /v1/sandboxes/$id  -> gone"
fi
echo
echo "ironcage serve is running on $api (state: $state; OpenAPI at $api/openapi.json). Ctrl-C stops it."
wait "$server"

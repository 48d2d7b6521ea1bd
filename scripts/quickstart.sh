#!/usr/bin/env bash
# The two commands of the README's quick start:
#   scripts/quickstart.sh demo   set up, build, and run the demo (commands in sandboxes, what was blocked)
#   scripts/quickstart.sh test   set up, build, and run the whole test suite (also as an unprivileged user)
# "Set up" installs the system packages with apt-get when run as root; otherwise it prints the exact command.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in demo|test) ;; *) echo "usage: $0 demo|test" >&2; exit 2 ;; esac

# bubblewrap: the sandbox; gcc + libc6-dev: the static in-sandbox agent; g++ + make: node-gyp builds
# better-sqlite3 (the control plane's store); the rest are tools the tests run inside sandboxes (python3, git, curl)
# or use to check the host (procps, iproute2, util-linux). postgresql-15: the store tests start a real, throwaway
# PostgreSQL cluster of their own (the package's own "main" cluster is neither used nor touched).
packages=(bubblewrap gcc g++ make libc6-dev python3 git curl ca-certificates procps iproute2 util-linux passwd)
if [ "$mode" = test ]; then packages+=(postgresql-15); fi
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "ironcage setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "ironcage setup: missing system packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
command -v node >/dev/null || { echo "ironcage setup: Node.js >= 20 is required" >&2; exit 1; }

# `npm install` with the committed lock file, not `npm ci`: the package registry reachable here lacks some of
# biome's binaries for other platforms, so `npm ci` refuses the lock as incomplete. The lock is still honoured.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --no-audit --no-fund --loglevel=error
fi
npm run --silent build

if [ "$mode" = demo ]; then
  node dist/bin/main.js demo
  exec scripts/serve-demo.sh
fi

# Tests: everything as the current user, then (when root) the sandbox tests again as an unprivileged user.
npm run --silent lint
npm test
if [ "$(id -u)" = 0 ]; then
  scripts/test-unprivileged.sh
fi

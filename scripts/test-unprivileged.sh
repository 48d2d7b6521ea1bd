#!/usr/bin/env bash
# Runs the sandbox test suites as an unprivileged user, the way most people run ironcage. Needs root to create
# the user and a private copy of the built tree that user can read.
set -euo pipefail
cd "$(dirname "$0")/.."
user=ironcage-test
id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /usr/sbin/nologin "$user"
copy=$(mktemp -d /tmp/ironcage-unprivileged.XXXXXX)
trap 'rm -rf "$copy"' EXIT
cp -a package.json dist native node_modules "$copy"/
chown -R "$user:" "$copy"
chmod 0755 "$copy"
echo "== tests as unprivileged user '$user' (uid $(id -u "$user"))"
cd "$copy"
runuser -u "$user" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$(getent passwd "$user" | cut -d: -f6)" \
  node --test --test-concurrency=2 $(find dist/test/integration dist/test/escape -name '*.test.js' | sort)

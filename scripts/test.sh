#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, UI and doc tests) against PostgreSQL.
#
# Uses the server in DATABASE_URL (an admin url) when it is set. Otherwise `with-postgres`
# starts a throwaway PostgreSQL cluster from the local binaries (installing the Debian
# `postgresql` package first when they are missing and this runs as root), points
# DATABASE_URL at it for both cargo runs, and removes it afterwards, also on Ctrl-C.
#
# Usage: scripts/test.sh [args for both cargo test runs, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo run -q -p osa-events-fixtures --bin with-postgres -- bash -euo pipefail -c '
  cargo test --workspace --all-targets "$@"
  cargo test --workspace --doc "$@"
' test.sh "$@"

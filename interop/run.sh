#!/usr/bin/env bash
# CI entry point, run from the repository root: interop/run.sh
# Installs the pinned js dependencies and runs the interop tests against $DFS_BIN
# (default: target/debug/dfs of this repository; build it first with `cargo build`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DFS_BIN="${DFS_BIN:-$root/target/debug/dfs}"
if [[ ! -x "$DFS_BIN" ]]; then
  echo "interop: no dfs binary at $DFS_BIN (run cargo build, or set DFS_BIN)" >&2
  exit 2
fi
cd "$root/interop"
npm ci --no-audit --no-fund --loglevel=error
npm test --silent

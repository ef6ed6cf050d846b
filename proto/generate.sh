#!/usr/bin/env bash
# generate.sh regenerates gen/ from proto/: fetches the BSR-less imports,
# lints, and runs buf generate with the plugins pinned in go.mod.
set -euo pipefail
cd "$(dirname "$0")/.."
./proto/fetch-deps.sh
go tool buf lint
go tool buf generate

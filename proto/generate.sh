#!/usr/bin/env bash
# generate.sh regenerates gen/ from proto/: fetches the BSR-less imports,
# lints, runs buf generate with the plugins pinned in go.mod, and
# regenerates the config's JSON Schema (config/gatehouse.schema.json).
set -euo pipefail
cd "$(dirname "$0")/.."
./proto/fetch-deps.sh
go tool buf lint
go tool buf generate
# The config file's JSON Schema follows config.proto.
go run ./cmd/genschema

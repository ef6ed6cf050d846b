#!/usr/bin/env bash
# fetch-deps.sh brings the proto imports that would otherwise come from the
# Buf Schema Registry into .protodeps/ (git-ignored), which buf.yaml reads as
# a second module:
#   google/api/*.proto           from the npm package google-proto-files
#   buf/validate/validate.proto  from the Go module github.com/bufbuild/protovalidate
# Versions are pinned here; bump them on purpose.
set -euo pipefail
GOOGLE_PROTO_FILES_VERSION=6.0.1
PROTOVALIDATE_VERSION=v1.2.2

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.protodeps"
stamp="$dest/.stamp"
want="google-proto-files@$GOOGLE_PROTO_FILES_VERSION protovalidate@$PROTOVALIDATE_VERSION"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
rm -rf "$dest"
mkdir -p "$dest/google/api" "$dest/buf/validate"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "google-proto-files@$GOOGLE_PROTO_FILES_VERSION" >/dev/null && tar xzf google-proto-files-*.tgz)
for f in annotations.proto http.proto field_behavior.proto httpbody.proto; do
  cp "$tmp/package/google/api/$f" "$dest/google/api/$f"
done

modDir=$(cd "$root" && go mod download -json "github.com/bufbuild/protovalidate@$PROTOVALIDATE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp "$modDir/proto/protovalidate/buf/validate/validate.proto" "$dest/buf/validate/validate.proto"
chmod -R u+w "$dest"
echo "$want" > "$stamp"

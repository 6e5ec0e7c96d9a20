#!/usr/bin/env bash
# Builds the Go test peers (tests/peers/go/*/main.go) offline in GOPATH mode against Debian's
# packaged libraries in /usr/share/gocode, and prints the directory holding the binaries.
# Builds are cached under $IDBRIDGE_GO_PEERS_CACHE (default: .go-peers at the repository root),
# keyed by the sources, the Go version and the packaged library versions. No network: the
# module proxy is switched off.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
CACHE=${IDBRIDGE_GO_PEERS_CACHE:-$ROOT/.go-peers}
CLIENTS=(gcpclient awsclient azureclient)
PACKAGES=(golang-go golang-google-cloud-compute-metadata-dev golang-golang-x-oauth2-google-dev
    golang-google-api-dev golang-github-aws-aws-sdk-go-v2-dev golang-github-aws-aws-sdk-go-dev
    golang-github-azure-go-autorest-dev)

command -v go >/dev/null || { echo "go/build.sh: go not found (apt-get install golang-go)" >&2; exit 1; }
key=$( {
    go version
    dpkg-query -W -f '${Package} ${Version}\n' "${PACKAGES[@]}" 2>/dev/null || true
    cd "$HERE" && find . -name '*.go' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)
out=$CACHE/$key
have=1
for c in "${CLIENTS[@]}"; do [[ -x $out/$c ]] || have=0; done
if ((have == 0)); then
    tmp=$(mktemp -d "$CACHE.tmp.XXXXXX" 2>/dev/null || { mkdir -p "$CACHE" && mktemp -d "$CACHE/tmp.XXXXXX"; })
    trap 'rm -rf "$tmp"' EXIT
    for c in "${CLIENTS[@]}"; do
        echo "go/build.sh: building $c (GOPATH mode, offline)" >&2
        (cd "$HERE/$c" && GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$tmp/gopath:/usr/share/gocode" \
            GOCACHE="$CACHE/gocache" go build -o "$tmp/bin/$c" .)
    done
    mkdir -p "$CACHE"
    rm -rf "$out"
    mv "$tmp/bin" "$out"
fi
echo "$out"

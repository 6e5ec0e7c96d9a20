#!/usr/bin/env bash
# Load benchmark of `idbridge serve` (cached path) and the emulator (uncached exchanges).
#
# Everything runs on 127.0.0.1; every load is bounded (wrk: 2 threads, 32 connections, 10 s).
#   bench/serve-load.sh            # uses target/release/idbridge (cargo build --release -p idbridge)
# Needs: wrk (Debian package `wrk`), curl, python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${IDBRIDGE_BIN:-$PWD/target/release/idbridge}
DURATION=${DURATION:-10s}
[[ -x $BIN ]] || { echo "build first: cargo build --release -p idbridge" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_file() { for _ in $(seq 100); do [[ -s $1 ]] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

"$BIN" emulate --env-file "$tmp/emu.env" >"$tmp/emu.log" 2>&1 & pids+=($!)
wait_file "$tmp/emu.env"
set -a; . "$tmp/emu.env"; set +a
"$BIN" serve --config examples/serve.toml --env-file "$tmp/serve.env" >"$tmp/serve.log" 2>&1 & SERVE=$!; pids+=($SERVE)
wait_file "$tmp/serve.env"
( set -a; . "$tmp/serve.env"; set +a
  printf 'SERVE_GCE=%s\nSERVE_IMDS=%s\n' "$GCE_METADATA_HOST" "$AWS_EC2_METADATA_SERVICE_ENDPOINT" ) >"$tmp/vars"
. "$tmp/vars"

rss() { awk '/VmRSS|VmHWM/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"; echo; }
stats() { curl -s "$IDBRIDGE_EMULATOR_GOOGLE_URL/_emulator/stats"; echo; }

echo "== idbridge serve: GCE metadata token (cached)"
curl -sf -H 'Metadata-Flavor: Google' "http://$SERVE_GCE/computeMetadata/v1/instance/service-accounts/default/token" >/dev/null
wrk -t2 -c32 -d"$DURATION" --latency -H 'Metadata-Flavor: Google' \
  "http://$SERVE_GCE/computeMetadata/v1/instance/service-accounts/default/token"
echo "serve memory: $(rss "$SERVE")"

echo "== idbridge serve: IMDSv2 role credentials (cached)"
T=$(curl -sf -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 21600' "${SERVE_IMDS%/}/latest/api/token")
ROLE=$(curl -sf -H "x-aws-ec2-metadata-token: $T" "${SERVE_IMDS%/}/latest/meta-data/iam/security-credentials/")
wrk -t2 -c32 -d"$DURATION" --latency -H "x-aws-ec2-metadata-token: $T" \
  "${SERVE_IMDS%/}/latest/meta-data/iam/security-credentials/$ROLE"
echo "serve memory: $(rss "$SERVE")"
echo "upstream calls seen by the emulator during both runs: $(stats)"

echo "== emulator: AssumeRoleWithWebIdentity (uncached: JWT verify + trust policy + session)"
TOKEN=$(curl -sf -H 'Metadata-Flavor: Google' "http://$GCE_METADATA_HOST/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://psoxy.example/aws&format=full")
cat >"$tmp/arwwi.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A111122223333%3Arole%2Fpsoxy-tenant-access&RoleSessionName=bench&WebIdentityToken=$TOKEN"
LUA
wrk -t2 -c32 -d"$DURATION" --latency -s "$tmp/arwwi.lua" "$AWS_ENDPOINT_URL_STS/"

#!/usr/bin/env bash
# Checks the operators' install files with the tools that run on a
# machine without a container engine (docs/operations.md, What is
# checked here): hadolint on the Dockerfile, docker-compose on the fleet,
# systemd-analyze on the units, the variables they set against the
# documented ones, and `portcullis probe`.
#
#   BIN=target/debug/portcullis scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/debug/portcullis}
BIN=$(realpath "$BIN")
fail() { echo "check-deploy: $*" >&2; exit 1; }

echo "-- hadolint Dockerfile"
hadolint Dockerfile

echo "-- docker-compose config"
( cd deploy/compose
  PORTCULLIS_ADMIN_TOKEN=t PORTCULLIS_DATA_KEY=k PORTCULLIS_HUB_PUBLISH_TOKEN=p docker-compose config -q
  if env -u PORTCULLIS_ADMIN_TOKEN -u PORTCULLIS_DATA_KEY -u PORTCULLIS_HUB_PUBLISH_TOKEN \
       docker-compose config -q >/dev/null 2>&1; then
    fail "compose.yaml starts without its secrets"
  fi )

echo "-- systemd-analyze verify"
units=$(mktemp -d)
trap 'rm -rf "$units"' EXIT
for f in deploy/systemd/*.service; do
  sed "s#/usr/local/bin/portcullis#$BIN#" "$f" > "$units/$(basename "$f")"
done
out=$(systemd-analyze verify "$units"/*.service 2>&1) || fail "systemd-analyze: $out"
[ -z "$out" ] || fail "systemd-analyze: $out"

echo "-- variables the install files set are documented (and so read by the binary)"
# The compose file's own inputs (the secrets it asks the operator for).
inputs="PORTCULLIS_HUB_PUBLISH_TOKEN"
for v in $(grep -ohE 'PORTCULLIS_[A-Z_]+' Dockerfile deploy/compose/compose.yaml deploy/systemd/*.service | sort -u); do
  case " $inputs " in *" $v "*) continue ;; esac
  grep -q "\`$v\`" docs/operations.md || fail "$v is set by an install file but not in docs/operations.md"
done

echo "-- portcullis probe"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$units" >/dev/null 2>&1 &
server=$!
for _ in $(seq 1 50); do "$BIN" probe "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
"$BIN" probe "http://127.0.0.1:$port/" || { kill $server; fail "probe failed on a server that is up"; }
"$BIN" probe "http://127.0.0.1:$port/missing" 2>/dev/null && { kill $server; fail "probe passed on a 404"; }
kill $server
"$BIN" probe "http://127.0.0.1:1/" 2>/dev/null && fail "probe passed with nothing listening"
echo "check-deploy: ok"

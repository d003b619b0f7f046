# Sourced by .ci/run: starts a throwaway Redis for the policy engine's
# Redis backend test and exports REDIS_URL. Installs redis-server from
# Debian when missing. Never fails the run: without Redis that test says
# it skipped and the in-process backend is still tested.

pc_start_redis() {
  local sudo="" port=56379
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo=sudo; fi
  if ! command -v redis-server >/dev/null; then
    echo "== installing redis-server"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null || return 1
  fi
  if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null || return 1
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  export REDIS_URL="redis://127.0.0.1:$port/0"
}

if pc_start_redis; then
  echo "== Redis at $REDIS_URL"
else
  echo "== Redis unavailable: the Redis backend test will skip"
fi

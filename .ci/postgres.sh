# Sourced by .ci/run: starts a throwaway PostgreSQL for the tests that run
# on Postgres too (admin, hub) and exports DATABASE_URL. Installs PostgreSQL
# from Debian when missing. Never fails the run: without Postgres those
# tests run on SQLite only, and this says so.

pc_start_postgres() {
  local sudo="" port=55432 dir bin ver
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo=sudo; fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "== installing PostgreSQL"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null || return 1
  fi
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  bin=/usr/lib/postgresql/$ver/bin
  dir=${TMPDIR:-/tmp}/portcullis-ci-pg
  if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    # PostgreSQL refuses to run as root: as root, run it as `postgres`.
    local as=()
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres || return 1
      chown postgres "$dir"
      as=(runuser -u postgres --)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null || return 1
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || { cat "$dir/log" 2>/dev/null; return 1; }
  fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "== PostgreSQL $ver on 127.0.0.1:$port (DATABASE_URL set)"
}

pc_start_postgres || echo "== PostgreSQL could not start: Postgres variants of the tests are skipped"

#!/usr/bin/env bash
# Finds a PostgreSQL server for the tests, or starts a throwaway one, and prints a
# connection string for it on stdout (everything else goes to stderr).
#
#   scripts/test-postgres.sh start   # print a URL: $HONEYDEW_TEST_DATABASE_URL when set,
#                                    # else a server on the local socket or 127.0.0.1:5432,
#                                    # else a throwaway cluster (Debian's postgresql,
#                                    # installed if missing) run by an unprivileged user
#   scripts/test-postgres.sh stop    # stop the throwaway cluster, if this script started one
#
# The throwaway cluster lives in a temporary directory recorded in $state; `start` reuses
# it while it runs, so repeated test runs do not pay for initdb again.
set -euo pipefail
state=${HONEYDEW_TEST_PG_STATE:-${TMPDIR:-/tmp}/honeydew-test-postgres}
user=honeydew-pg

reachable() { psql "$1" -qtAc 'SELECT 1' >/dev/null 2>&1; }

start() {
  if [ -n "${HONEYDEW_TEST_DATABASE_URL:-}" ]; then
    echo "$HONEYDEW_TEST_DATABASE_URL"; return
  fi
  # HONEYDEW_TEST_PG_THROWAWAY=1 skips any running server (to try the throwaway path).
  [ -n "${HONEYDEW_TEST_PG_THROWAWAY:-}" ] || for url in "host=/var/run/postgresql user=postgres dbname=postgres" \
             "host=127.0.0.1 port=5432 user=postgres dbname=postgres"; do
    if command -v psql >/dev/null 2>&1 && reachable "$url"; then echo "$url"; return; fi
  done
  if [ -f "$state/url" ] && reachable "$(cat "$state/url")"; then cat "$state/url"; return; fi

  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bindir" ]; then
    echo "installing Debian's postgresql for the tests" >&2
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends postgresql >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  # PostgreSQL refuses to run as root: the cluster belongs to an unprivileged user.
  run=()
  if [ "$(id -u)" -eq 0 ]; then
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    run=(runuser -u "$user" --)
  fi
  rm -rf "$state"; mkdir -p "$state"
  [ "$(id -u)" -eq 0 ] && chown "$user" "$state"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${run[@]}" "$bindir/initdb" -D "$state/data" -U postgres -A trust --no-sync >&2
  "${run[@]}" "$bindir/pg_ctl" -D "$state/data" -l "$state/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c fsync=on -c max_connections=300" start >&2
  echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" > "$state/url"
  echo "$bindir" > "$state/bindir"
  cat "$state/url"
}

stop() {
  [ -f "$state/bindir" ] || return 0
  run=(); [ "$(id -u)" -eq 0 ] && run=(runuser -u "$user" --)
  "${run[@]}" "$(cat "$state/bindir")/pg_ctl" -D "$state/data" -m fast -w stop >&2 || true
  rm -rf "$state"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

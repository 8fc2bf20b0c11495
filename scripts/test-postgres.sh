#!/usr/bin/env bash
# Finds a PostgreSQL server for the tests, or starts a throwaway one, and prints a
# connection string for it on stdout (everything else goes to stderr).
#
#   scripts/test-postgres.sh start   # print a URL: $HONEYDEW_TEST_DATABASE_URL when set,
#                                    # else a server on the local socket or 127.0.0.1:5432,
#                                    # else a throwaway cluster (Debian's postgresql,
#                                    # installed if missing) run by an unprivileged user
#   scripts/test-postgres.sh start-tls  # print the directory of a second throwaway cluster,
#                                    # for the TLS tests: it accepts TCP clients only over
#                                    # TLS, with a certificate for `localhost` signed by a
#                                    # test CA; the directory holds `url`, `ca.crt`, a
#                                    # stranger's `other-ca.crt`, and `client.crt`/`client.key`
#                                    # for the role `certuser` (which must show them)
#   scripts/test-postgres.sh stop    # stop the throwaway clusters, if this script started any
#
# A throwaway cluster lives in a temporary directory recorded in $state; `start` reuses
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

  find_bindir
  cluster "$state" "-c listen_addresses=127.0.0.1"
  echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" > "$state/url"
  cat "$state/url"
}

# Sets $bindir to the newest installed PostgreSQL, installing Debian's when none is.
find_bindir() {
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$bindir" ] || ! command -v openssl >/dev/null 2>&1; then
    echo "installing Debian's postgresql and openssl for the tests" >&2
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends postgresql openssl >&2
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  # PostgreSQL refuses to run as root: a cluster belongs to an unprivileged user.
  run=()
  if [ "$(id -u)" -eq 0 ]; then
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
    run=(runuser -u "$user" --)
  fi
}

# Creates and starts a cluster in directory $1 on a free port ($port), with the extra
# server options $2 (and $3, run before the start, to adjust the data directory).
cluster() {
  local dir=$1 options=$2 prepare=${3:-}
  rm -rf "$dir"; mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown "$user" "$dir"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync >&2
  [ -z "$prepare" ] || "$prepare" "$dir"
  "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "$options -p $port -k $dir -c fsync=on -c max_connections=300" start >&2
  echo "$bindir" > "$dir/bindir"
}

# The TLS cluster's certificates and client rules, written before it starts.
tls_files() {
  local dir=$1 data=$1/data
  ( cd "$dir"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    for ca in ca other-ca; do
      openssl req -x509 "${ec[@]}" -keyout "$ca.key" -out "$ca.crt" -days 3650 \
        -subj "/CN=honeydew test $ca" -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    done
    sign() { # name, subject, extensions
      openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
        -out "$1.crt" -extfile <(printf '%s\n' "$3" "basicConstraints=CA:FALSE") 2>/dev/null
    }
    # A name only, no address: `host=127.0.0.1` with verify-full must fail on the name.
    sign server "/CN=localhost" "subjectAltName=DNS:localhost"
    sign client "/CN=certuser" "extendedKeyUsage=clientAuth"
    cp server.crt server.key ca.crt "$data/"
    chmod 0600 "$data/server.key" client.key
    [ "$(id -u)" -ne 0 ] || chown "$user" "$data/server.crt" "$data/server.key" "$data/ca.crt" )
  # Plain TCP is refused (no hostnossl line); certuser must show a client certificate.
  printf '%s\n' "local all all trust" \
    "hostssl all certuser 127.0.0.1/32 cert" "hostssl all certuser ::1/128 cert" \
    "hostssl all all 127.0.0.1/32 trust" "hostssl all all ::1/128 trust" > "$data/pg_hba.conf"
}

start_tls() {
  local dir=$state-tls
  exec 9>"$dir.lock"; flock 9
  if [ -f "$dir/url" ] && reachable "host=$dir port=$(cat "$dir/port") user=postgres dbname=postgres"; then
    echo "$dir"; return
  fi
  find_bindir
  # Not inherited by the server, which would hold the lock for as long as it runs.
  cluster "$dir" "-c listen_addresses=localhost -c ssl=on -c ssl_cert_file=server.crt \
    -c ssl_key_file=server.key -c ssl_ca_file=ca.crt" tls_files 9>&-
  echo "$port" > "$dir/port"
  psql "host=$dir port=$port user=postgres dbname=postgres" -qc "CREATE ROLE certuser LOGIN SUPERUSER" >&2
  echo "host=localhost port=$port user=postgres dbname=postgres" > "$dir/url"
  echo "$dir"
}


stop() {
  local dir
  for dir in "$state" "$state-tls"; do
    [ -f "$dir/bindir" ] || continue
    run=(); [ "$(id -u)" -eq 0 ] && run=(runuser -u "$user" --)
    "${run[@]}" "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
  done
}

case "${1:-start}" in
  start) start ;;
  start-tls) start_tls ;;
  stop) stop ;;
  *) echo "usage: $0 start|start-tls|stop" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs honeydewd with the bundled plugins and puts real jobs through it: an echo job, and
# a GitHub job against a local stand-in of the GitHub API (scripts/fake-github.py) to
# which the daemon adds the Authorization header that the plugin never sees. The daemon
# then keeps running in the foreground for you to try the CLI; Ctrl-C stops it.
#
# Everything lives in target/demo (data directory, socket, database, log, plugins).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/setup.sh
scripts/build-plugins.sh
cargo build -p honeydew --bins

demo="$root/target/demo"
rm -rf "$demo"
mkdir -p -m 700 "$demo" && mkdir -p "$demo/plugins"
export HONEYDEW_DATA_DIR="$demo"
export PATH="$root/target/debug:$PATH"

# The stand-in for api.github.com, on a free loopback port it prints first.
python3 -u scripts/fake-github.py 0 > "$demo/fake-github.log" &
fake_pid=$!
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  kill "$fake_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  port=$(head -n 1 "$demo/fake-github.log")
  [ -n "$port" ] && break
  sleep 0.1
done

# The bundled plugins; github's manifest points at the stand-in instead of GitHub.
for plugin in echo github gitlab jira linear bitbucket; do
  cp "target/plugins/$plugin.wasm" "$demo/plugins/"
done
cp target/plugins/echo.toml "$demo/plugins/"
fake="http://127.0.0.1:$port"
sed -e "s#https://api.github.com#$fake#g" -e "s#https://codeload.github.com#$fake#g" \
  target/plugins/github.toml > "$demo/plugins/github.toml"
for plugin in gitlab jira linear bitbucket; do
  cp "target/plugins/$plugin.toml" "$demo/plugins/"
done
export HONEYDEW_SECRET_GITHUB_TOKEN=demo-token-not-a-secret

echo "== starting honeydewd (data directory $demo)"
# Its log goes to daemon.log (JSON lines) and, for people, to stderr.log.
honeydewd 2> "$demo/stderr.log" &
daemon_pid=$!
for _ in $(seq 1 100); do
  [ -S "$demo/honeydew.sock" ] && honeydew plugins >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { echo "honeydewd exited; see $demo/daemon.log" >&2; exit 1; }
  sleep 0.1
done

run() { echo; echo "\$ $*"; "$@"; }
run honeydew plugins
run honeydew submit echo.echo --payload '{"hello":"honeydew"}' --wait
run honeydew github commits --owner octocat --repo Hello-World --wait
run honeydew submit github.commits --payload '{"owner":"octocat"}' --wait || true
run honeydew list
echo
echo "# what the fake GitHub saw: the host added the token; the plugin never had it"
tail -n +2 "$demo/fake-github.log"
run sqlite3 -header -column "$demo/honeydew.db" \
  "SELECT command, status, retry_count, plugin_version, error FROM jobs ORDER BY created_at"

cat <<MSG

== honeydewd is running. In another terminal:
   export HONEYDEW_DATA_DIR=$demo PATH=$root/target/debug:\$PATH
   honeydew submit echo.echo --payload '{"x":1}' --wait
   honeydew schedule ls
   tail -f $demo/daemon.log
Ctrl-C stops the daemon (running jobs drain first). Its log follows.
MSG
tail -n +1 -f "$demo/stderr.log" &
wait "$daemon_pid"

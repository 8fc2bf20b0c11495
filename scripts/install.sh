#!/usr/bin/env bash
# Installs Honeydew for the current user, idempotently:
# - `honeydew` and `honeydewd` (release build) into $PREFIX/bin (default ~/.local/bin);
# - the bundled plugins (echo, github, gitlab, jira, linear, bitbucket) with their
#   manifests into the data directory's plugin folder ($HONEYDEW_DATA_DIR, default
#   ~/.honeydew), where a running daemon picks them up. A manifest the operator has
#   edited is never overwritten: the bundled one is written beside it as
#   NAME.toml.bundled (which the daemon ignores) and the script says so;
# - the systemd user unit contrib/honeydewd.service into ~/.config/systemd/user/.
# It does not start anything. Test fixtures are not installed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

prefix="${PREFIX:-$HOME/.local}"
data_dir="${HONEYDEW_DATA_DIR:-$HOME/.honeydew}"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
bundled=(echo github gitlab jira linear bitbucket)

scripts/setup.sh
scripts/build-plugins.sh
cargo build --release --locked -p honeydew --bins

# Each file goes in under a temporary name, then is renamed into place, so that a
# running daemon never sees half a component.
place() {
  local source=$1 target=$2 mode=$3
  install -m "$mode" "$source" "$target.installing"
  mv -f "$target.installing" "$target"
}

install -d -m 0755 "$prefix/bin"
for binary in honeydew honeydewd; do
  place "target/release/$binary" "$prefix/bin/$binary" 0755
done

install -d -m 0700 "$data_dir"
install -d -m 0700 "$data_dir/plugins"
for plugin in "${bundled[@]}"; do
  manifest="$data_dir/plugins/$plugin.toml"
  if [ ! -e "$manifest" ]; then
    place "target/plugins/$plugin.toml" "$manifest" 0600
  elif ! cmp -s "target/plugins/$plugin.toml" "$manifest"; then
    place "target/plugins/$plugin.toml" "$manifest.bundled" 0600
    echo "kept your edited $manifest; the bundled manifest is beside it as $plugin.toml.bundled"
  fi
  cmp -s "target/plugins/$plugin.wasm" "$data_dir/plugins/$plugin.wasm" ||
    place "target/plugins/$plugin.wasm" "$data_dir/plugins/$plugin.wasm" 0644
done

install -d -m 0755 "$unit_dir"
place contrib/honeydewd.service "$unit_dir/honeydewd.service" 0644

echo "installed honeydew and honeydewd into $prefix/bin, plugins into $data_dir/plugins"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "add $prefix/bin to your PATH" ;;
esac
echo "run it: honeydewd   (or: systemctl --user daemon-reload && systemctl --user enable --now honeydewd)"

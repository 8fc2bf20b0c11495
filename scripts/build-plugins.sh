#!/usr/bin/env bash
# Builds every plugin in plugins/ into a WebAssembly component and copies each
# NAME.wasm with its manifest NAME.toml into target/plugins/. Works from any directory;
# quick when nothing changed. A plugin is a directory plugins/NAME or
# plugins/fixtures/NAME holding crate `honeydew-plugin-NAME` and manifest NAME.toml.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/plugins"

"$root/scripts/install-guest-toolchain.sh"

# Same folder as plugins/.cargo/config.toml names; set here so that a CARGO_TARGET_DIR
# in the caller's environment cannot send the components elsewhere.
export CARGO_TARGET_DIR="$root/target/guest"
# Building std from source (-Zbuild-std) is unstable: allow it on Debian's stable rustc.
export RUSTC_BOOTSTRAP=1
(cd "$root/plugins" && /usr/bin/cargo build --release)

built="$CARGO_TARGET_DIR/wasm32-wasip2/release"
mkdir -p "$out"
count=0
for dir in "$root"/plugins/*/ "$root"/plugins/fixtures/*/; do
  name="$(basename "$dir")"
  manifest="$dir$name.toml"
  [ -f "$manifest" ] || continue
  component="$built/honeydew_plugin_$name.wasm"
  if [ ! -f "$component" ]; then
    echo "error: ${manifest#"$root"/} has no component: is its crate named honeydew-plugin-$name and a workspace member?" >&2
    exit 1
  fi
  # Copy only what changed, so that a daemon watching the folder sees no spurious reloads.
  cmp -s "$component" "$out/$name.wasm" || cp "$component" "$out/$name.wasm"
  cmp -s "$manifest" "$out/$name.toml" || cp "$manifest" "$out/$name.toml"
  printf '  %-14s %6d KiB  %s\n' "$name" $(( ($(stat -c %s "$component") + 1023) / 1024 )) "${out#"$root"/}/$name.wasm"
  count=$((count + 1))
done
echo "$count plugins in ${out#"$root"/}/"

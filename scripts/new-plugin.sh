#!/usr/bin/env bash
# Scaffolds a new plugin: plugins/NAME with crate honeydew-plugin-NAME (a working
# `hello` command), manifest NAME.toml, and an entry in the plugin workspace.
# Usage: scripts/new-plugin.sh NAME   (NAME: [a-z][a-z0-9_]*)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
workspace="$root/plugins/Cargo.toml"
marker="# scripts/new-plugin.sh adds new plugins above this line"

if [ $# -ne 1 ]; then
  echo "usage: scripts/new-plugin.sh NAME" >&2
  exit 2
fi
name="$1"
if ! [[ "$name" =~ ^[a-z][a-z0-9_]*$ ]]; then
  echo "error: invalid plugin name \"$name\": use a lowercase letter, then lowercase letters, digits or _" >&2
  exit 1
fi
for taken in "$root/plugins/$name" "$root/plugins/fixtures/$name"; do
  if [ -e "$taken" ]; then
    echo "error: \"$name\" is taken: ${taken#"$root"/} exists" >&2
    exit 1
  fi
done
if ! grep -qF "$marker" "$workspace"; then
  echo "error: plugins/Cargo.toml lacks the line \"$marker\"; add the member by hand" >&2
  exit 1
fi

dir="$root/plugins/$name"
type="$(sed -E 's/(^|_)([a-z0-9])/\U\2/g' <<<"$name")"
mkdir -p "$dir/src"

cat >"$dir/Cargo.toml" <<TOML
# Plugin \`$name\`.
[package]
name = "honeydew-plugin-$name"
version.workspace = true
edition.workspace = true
license.workspace = true
publish.workspace = true

[lib]
crate-type = ["cdylib"]

[dependencies]
honeydew-plugin-sdk.workspace = true
serde.workspace = true

[lints]
workspace = true
TOML

cat >"$dir/src/lib.rs" <<RUST
//! Plugin \`$name\`.
//!
//! - \`hello\` takes \`{"name"?: "..."}\` and returns \`{"greeting": "hello, NAME"}\`.

use honeydew_plugin_sdk::{Plugin, PluginError, PluginInfo, parse_payload, to_json};
use serde::{Deserialize, Serialize};

struct $type;

#[derive(Deserialize)]
struct Hello {
    name: Option<String>,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

impl Plugin for $type {
    fn describe() -> PluginInfo {
        PluginInfo::new("$name", env!("CARGO_PKG_VERSION"), &["hello"])
    }

    fn run(command: &str, payload: &[u8]) -> Result<Vec<u8>, PluginError> {
        match command {
            "hello" => {
                let hello: Hello = parse_payload(payload)?;
                let name = hello.name.unwrap_or_else(|| "world".to_owned());
                to_json(&Greeting {
                    greeting: format!("hello, {name}"),
                })
            }
            _ => Err(PluginError::unknown_command(command)),
        }
    }
}

honeydew_plugin_sdk::export_plugin!($type);
RUST

cat >"$dir/$name.toml" <<TOML
# Manifest of plugin \`$name\`: the operator's policy for it (see plugins/README.md).
# It grants no network until [network] allowed_hosts names a destination.

[limits]
# fuel = 2_000_000_000
# memory_mib = 64
# timeout_ms = 30_000
# max_retries = 5

[network]
allowed_hosts = []

[config]
TOML

sed -i "s|^\( *\)$marker|\1\"$name\",\n&|" "$workspace"

echo "created plugins/$name (crate honeydew-plugin-$name, manifest $name.toml)"
echo "build it with scripts/build-plugins.sh; it lands in target/plugins/$name.wasm"

//! `honeydew`: the command line client. Everything is in [`honeydew_cli`]; this file
//! names no other crate, so the binary links only the CLI's (no wasmtime, SQLite or
//! PostgreSQL, though this package depends on them). It lives in this package so that
//! the end-to-end tests get its path as `CARGO_BIN_EXE_honeydew`.

fn main() -> std::process::ExitCode {
    honeydew_cli::main()
}

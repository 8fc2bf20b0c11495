//! `honeydewd`: the Honeydew daemon. Everything is in [`honeydew::daemon`]; this file
//! only parses the command line.

use std::process::ExitCode;

use clap::Parser;
use honeydew::config::DaemonArgs;
use honeydew_proto::DataDirArg;

/// Honeydew daemon: runs jobs as sandboxed WebAssembly components, served over gRPC on
/// <data-dir>/honeydew.sock. Stops on SIGINT/SIGTERM after draining running jobs; a
/// second signal stops at once, putting running jobs back to pending.
#[derive(Parser, Debug)]
#[command(name = "honeydewd", version)]
struct Cli {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    daemon: DaemonArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.data_dir.resolve() {
        Ok(data_dir) => honeydew::daemon::main(data_dir, cli.daemon),
        Err(err) => {
            eprintln!("honeydewd: {err}");
            ExitCode::from(2)
        }
    }
}

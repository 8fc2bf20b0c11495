//! `honeydew`: the command line client. Everything is in [`honeydew::cli`].

fn main() -> std::process::ExitCode {
    honeydew::cli::main()
}

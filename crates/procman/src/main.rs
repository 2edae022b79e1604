//! The `procman` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    procman::cli::main()
}

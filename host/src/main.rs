//! The `wasmkube` binary: parse the command line and hand over to `cmd`. Errors end here,
//! printed with their causes; a command line that does not validate exits with code 2.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = wasmkube::cmd::Cli::parse();
    wasmkube::cmd::init_logging();
    match wasmkube::cmd::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            if let Some(invalid) = error.downcast_ref::<wasmkube::cmd::InvalidOptions>() {
                eprintln!("{invalid}");
                return std::process::ExitCode::from(2);
            }
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

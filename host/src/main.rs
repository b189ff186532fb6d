//! The `wasmkube` binary: parse the command line and hand over to `cmd`. Errors end here,
//! printed with their causes; a command line that does not validate exits with code 2.

use clap::Parser;

/// mimalloc rather than glibc's malloc: the API path allocates many small JSON values
/// across threads, where glibc spent a fifth of the time (profiled with perf under `bench plugins`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

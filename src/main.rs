//! The `kalshibook` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use kalshibook::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kalshibook: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kalshibook: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `berth` command: arguments → telemetry → one subcommand.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporters are made on the runtime, which then runs their sends.
    let telemetry = {
        let _runtime = runtime.enter();
        berth::telemetry::init()
    };
    let code = match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Off the runtime's threads (the flush blocks), while the runtime still runs the sends.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

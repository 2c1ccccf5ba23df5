use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use triton_compose::cli::Cli;
use triton_compose::compose;
use triton_compose::request::ComposeRequest;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet {
        "error"
    } else if cli.verbose {
        "debug"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRITON_COMPOSE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    let quiet = cli.quiet;
    triton_compose::progress::configure(std::io::stderr().is_terminal(), quiet);
    let compression = match cli.compression() {
        Ok(c) => c,
        Err(message) => return report(&triton_compose::error::Error::new(message)),
    };
    let raw = cli.into_raw(compression, std::env::var("SOURCE_DATE_EPOCH").ok());
    let result = ComposeRequest::new(raw).and_then(|request| compose::compose(&request));
    match result {
        Ok(outcome) => {
            if !quiet {
                match outcome.written {
                    Some(written) => eprintln!("{written}"),
                    None => eprintln!("dry run: wrote {}", outcome.dockerfile.display()),
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => report(&err),
    }
}

fn report(err: &triton_compose::error::Error) -> ExitCode {
    eprintln!("error: {err}");
    if let Some(hint) = err.hint_text() {
        eprintln!("  hint: {hint}");
    }
    ExitCode::FAILURE
}

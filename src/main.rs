use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use triton_compose::cli::{
    self, CatalogCli, Cli, SbomCli, ServeCli, StoreCli, StoreCommand, VerifyCli,
};
use triton_compose::human_size;
use triton_compose::ComposeRequest;
use triton_compose::Error;
use triton_compose::ImageRef;
use triton_compose::Store;

fn main() -> ExitCode {
    if let Err(err) = triton_compose::install_signal_handlers() {
        return report(&err);
    }
    match std::env::args().nth(1).as_deref() {
        Some("verify") => return verify(VerifyCli::parse_from(std::env::args().skip(1))),
        Some("store") => return store(StoreCli::parse_from(std::env::args().skip(1))),
        Some("catalog") => return catalog(CatalogCli::parse_from(std::env::args().skip(1))),
        Some("sbom") => return sbom(SbomCli::parse_from(std::env::args().skip(1))),
        Some("serve") => return serve(ServeCli::parse_from(std::env::args().skip(1))),
        _ => {}
    }
    run_compose(Cli::parse())
}

fn init_logging(quiet: bool, verbose: bool) {
    let level = if quiet {
        "error"
    } else if verbose {
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
    triton_compose::configure_progress(std::io::stderr().is_terminal(), quiet);
}

fn run_compose(cli: Cli) -> ExitCode {
    init_logging(cli.quiet, cli.verbose);
    let quiet = cli.quiet;
    let json = cli.json;
    let compression = match cli.compression() {
        Ok(c) => c,
        Err(message) => return report(&Error::new(message)),
    };
    let raw = cli.into_raw(compression, std::env::var("SOURCE_DATE_EPOCH").ok());
    let result =
        ComposeRequest::new(raw).and_then(|request| triton_compose::compose_variants(&request));
    match result {
        Ok(outcomes) => {
            if json {
                let documents: Vec<serde_json::Value> = outcomes
                    .iter()
                    .map(|(name, outcome)| {
                        let mut document = match &outcome.summary {
                            Some(summary) => {
                                serde_json::to_value(summary).expect("summaries serialize")
                            }
                            None => serde_json::json!({
                                "dry_run": true,
                                "dockerfile": outcome.dockerfile.display().to_string(),
                                "slim": outcome.slim,
                            }),
                        };
                        if let Some(name) = name {
                            document["variant"] = serde_json::Value::String(name.clone());
                        }
                        document
                    })
                    .collect();
                let document = match <[serde_json::Value; 1]>::try_from(documents) {
                    Ok([single]) if outcomes[0].0.is_none() => single,
                    Ok([single]) => serde_json::Value::Array(vec![single]),
                    Err(many) => serde_json::Value::Array(many),
                };
                println!("{}", serde_json::to_string_pretty(&document).expect("json"));
            }
            if !quiet {
                for (name, outcome) in outcomes {
                    if let Some(name) = &name {
                        eprintln!("variant {name}:");
                    }
                    if let Some(summary) = &outcome.summary {
                        eprint!("{}", summary.table());
                    }
                    match outcome.written {
                        Some(written) => eprintln!("{written}"),
                        None => eprintln!("dry run: wrote {}", outcome.dockerfile.display()),
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => report(&err),
    }
}

fn verify(cli: VerifyCli) -> ExitCode {
    init_logging(cli.verbosity.quiet, cli.verbosity.verbose);
    let result = cli.image.parse::<ImageRef>().and_then(|image| {
        let options = cli.access.options()?;
        triton_compose::verify(&image, &options)
    });
    match result {
        Ok(verdict) => {
            if cli.json {
                let json = serde_json::to_string_pretty(&verdict).expect("reports serialize");
                println!("{json}");
            } else {
                print!("{}", verdict.render());
            }
            if verdict.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => report(&err),
    }
}

fn sbom(cli: SbomCli) -> ExitCode {
    init_logging(cli.verbosity.quiet, cli.verbosity.verbose);
    let result = cli.image.parse::<ImageRef>().and_then(|image| {
        let options = cli.access.options()?;
        triton_compose::sbom_of_reference(&image, &options, cli.compute)
    });
    match result {
        Ok(document) => {
            // The bytes as stored, so that their digest is the blob's.
            use std::io::Write;
            match std::io::stdout().write_all(&document) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => report(&Error::new("cannot write the SBOM to stdout").with_source(err)),
            }
        }
        Err(err) => report(&err),
    }
}

fn serve(cli: ServeCli) -> ExitCode {
    init_logging(cli.verbosity.quiet, cli.verbosity.verbose);
    let result = (|| {
        let state_dir = match cli.state_dir.clone() {
            Some(dir) => dir,
            None => Store::default_dir()
                .map(|d| d.with_file_name("serve"))
                .ok_or_else(|| {
                    Error::new("no directory for the composed images").hint("pass --state-dir DIR")
                })?,
        };
        // The GPU flag as full says, so that every plan agrees with it.
        let full = cli
            .images
            .iter()
            .find_map(|i| i.strip_prefix("full,"))
            .ok_or_else(|| Error::new("serve needs --image full,REF"))?
            .parse::<ImageRef>()?;
        let gpu = full_gpu_flag(&full, &cli.access)?;
        if let Some(asked) = cli.enable_gpu.filter(|asked| *asked != gpu) {
            return Err(Error::new(format!(
                "--enable-gpu={asked}, but full was built with TRITON_SERVER_GPU_ENABLED={}",
                u8::from(gpu)
            ))
            .hint(format!(
                "pass --enable-gpu={gpu}, or leave it out (serve takes full's)"
            )));
        }
        let compression = cli.compression().map_err(Error::new)?;
        let listen = cli.listen;
        let idle = cli.exit_after_idle.map(std::time::Duration::from_secs);
        let tls = cli.tls_cert.clone().zip(cli.tls_key.clone());
        let htpasswd = cli.htpasswd.clone();
        let refresh = cli.refresh.map(std::time::Duration::from_secs);
        let shutdown_grace = std::time::Duration::from_secs(cli.shutdown_grace);
        let max_pending = cli.max_pending;
        let state_max_size = cli.state_max_size;
        let prebuild = !cli.no_prebuild;
        let base = ComposeRequest::new(cli.into_raw(gpu, compression, &state_dir))?;
        triton_compose::serve(triton_compose::ServeOptions {
            base,
            listen,
            state_dir,
            exit_after_idle: idle,
            tls,
            htpasswd,
            refresh,
            shutdown_grace,
            max_pending,
            state_max_size,
            prebuild,
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => report(&err),
    }
}

/// The GPU flag as full says (`TRITON_SERVER_GPU_ENABLED`), so that the
/// plans of commands that take no `--enable-gpu` agree with it.
fn full_gpu_flag(full: &ImageRef, access: &cli::Access) -> Result<bool, Error> {
    let options = access.options()?;
    let source = triton_compose::open_source(full, &options)?;
    let info = triton_compose::BuildInfo::from_full_config(&source.image().config, source.name())?;
    Ok(info.gpu_enabled)
}

fn catalog(cli: CatalogCli) -> ExitCode {
    init_logging(cli.verbosity.quiet, cli.verbosity.verbose);
    let json = cli.json;
    let result = (|| {
        let options = triton_compose::CatalogOptions {
            no_min: cli.min.is_none(),
            gpu_min: cli
                .gpu_min
                .as_deref()
                .map(|r| r.parse::<ImageRef>().map_err(|e| e.context("--gpu-min")))
                .transpose()?,
        };
        let gpu = full_gpu_flag(&cli.image.parse::<ImageRef>()?, &cli.access)?;
        let request = ComposeRequest::new(cli.into_raw(gpu))?;
        triton_compose::catalog(&request, &options)
    })();
    match result {
        Ok(catalog) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&catalog).expect("json"));
            } else {
                print!("{}", catalog.table());
            }
            ExitCode::SUCCESS
        }
        Err(err) => report(&err),
    }
}

fn store(cli: StoreCli) -> ExitCode {
    init_logging(false, false);
    let Some(dir) = cli::store_dir(cli.store) else {
        return report(
            &Error::new("no store directory: neither HOME nor XDG_CACHE_HOME is set")
                .hint("pass --store DIR"),
        );
    };
    let store = match Store::open(&dir, triton_compose::DEFAULT_STORE_MAX_SIZE) {
        Ok(store) => store,
        Err(err) => return report(&err),
    };
    match cli.command {
        StoreCommand::Du { json } => {
            let usage = store.usage();
            if json {
                let value = serde_json::json!({
                    "store": dir.display().to_string(),
                    "total": usage.total,
                    "indexes": {"count": usage.indexes.0, "size": usage.indexes.1},
                    "layers": {"count": usage.layers.0, "size": usage.layers.1},
                    "staging": {"count": usage.staging.0, "size": usage.staging.1},
                });
                println!("{}", serde_json::to_string_pretty(&value).expect("json"));
            } else {
                println!("{}: {}", dir.display(), human_size(usage.total));
                println!(
                    "  source layer indexes: {} ({} files)",
                    human_size(usage.indexes.1),
                    usage.indexes.0
                );
                println!(
                    "  built layers:         {} ({} files)",
                    human_size(usage.layers.1),
                    usage.layers.0
                );
                println!(
                    "  staging:              {} ({} files)",
                    human_size(usage.staging.1),
                    usage.staging.0
                );
            }
        }
        StoreCommand::Prune { max_size, all } => {
            let freed = store.prune(Some(if all {
                0
            } else {
                max_size.unwrap_or(triton_compose::DEFAULT_STORE_MAX_SIZE)
            }));
            println!(
                "freed {}; {} left in {}",
                human_size(freed),
                human_size(store.usage().total),
                dir.display()
            );
        }
    }
    ExitCode::SUCCESS
}

fn report(err: &Error) -> ExitCode {
    if triton_compose::interrupted() {
        eprintln!("error: {}", triton_compose::interruption());
        return ExitCode::from(130);
    }
    eprintln!("error: {err}");
    if let Some(hint) = err.hint_text() {
        eprintln!("  hint: {hint}");
    }
    ExitCode::FAILURE
}

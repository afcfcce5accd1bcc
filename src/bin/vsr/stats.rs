//! `vsr stats`: not implemented yet.

/// Arguments of `vsr stats`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("vsr stats is not implemented yet")
}

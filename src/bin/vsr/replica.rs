//! `vsr replica`: not implemented yet.

/// Arguments of `vsr replica`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("vsr replica is not implemented yet")
}

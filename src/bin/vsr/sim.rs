//! `vsr sim`: not implemented yet.

/// Arguments of `vsr sim`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("vsr sim is not implemented yet")
}

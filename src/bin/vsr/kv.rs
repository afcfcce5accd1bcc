//! `vsr kv`: not implemented yet.

/// Arguments of `vsr kv`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("vsr kv is not implemented yet")
}

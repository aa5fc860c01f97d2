//! `mock-cloud bench` (being built).

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}

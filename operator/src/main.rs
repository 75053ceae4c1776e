//! The `flmon-operator` binary: parses the command line and hands over to the library.

use clap::Parser;
use flmon_operator::cli::{Cli, Command};
use flmon_operator::run;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd(args) => run::crd(&args)?,
        Command::Render(args) => {
            for file in run::render(&args)?.files {
                println!("{}", file.display());
            }
        }
        Command::Run(args) => {
            run::init_logging(&cli.log_level, cli.log_format)?;
            run::run(*args).await?;
        }
    }
    Ok(())
}

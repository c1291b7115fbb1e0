//! `cargo xtask model`: fetch and convert the local label model (once; cached under target/).

use anyhow::Result;

pub fn run() -> Result<()> {
    let dir = deployer::local::model::ensure(&crate::console::Console::new("model"))?;
    println!("model ready in {}", dir.display());
    Ok(())
}

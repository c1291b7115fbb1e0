//! `cargo xtask synth`: writes the template and the per-role policies, prints a summary.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use stack::synth::{Format, SynthOptions, Synthesis, render};
use stack::{App, Architecture, Stage};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stage to synthesize for (lowercase letters, digits, single hyphens)
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Lambda architecture: arm64 or x86_64
    #[arg(long, default_value = "arm64")]
    pub arch: Architecture,
    /// Directory to write template and policies into
    #[arg(long, default_value = "target/synth")]
    pub out: PathBuf,
    /// Template format
    #[arg(long, value_enum, default_value_t = FormatArg::Yaml)]
    pub format: FormatArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    Yaml,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Yaml => Format::Yaml,
            FormatArg::Json => Format::Json,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let opts = SynthOptions {
        stage: a.stage,
        architecture: a.arch,
    };
    let app = App::image_pipeline();
    let synthesis = render(&app, &opts, a.format.into())?;
    let written = write(&synthesis, &a.out)?;
    println!("{}", summary(&app, &synthesis.template));
    for p in written {
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Renders and writes every file, replacing the policies directory so no stale policy
/// survives a function's removal.
pub fn write(synthesis: &Synthesis, out: &Path) -> Result<Vec<PathBuf>> {
    let policies = out.join("policies");
    if policies.exists() {
        fs::remove_dir_all(&policies)
            .with_context(|| format!("cannot clear {}", policies.display()))?;
    }
    let mut written = Vec::new();
    for (rel, body) in &synthesis.files {
        let path = out.join(rel);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn summary(app: &App, template: &stack::Template) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let counts = template.resource_counts();
    let total: usize = counts.values().sum();
    let _ = writeln!(s, "stack {} resources", total);
    for (ty, n) in counts {
        let _ = writeln!(s, "  {n:>3}  {ty}");
    }
    for f in &app.functions {
        let _ = writeln!(s, "role {} ({} function)", f.role_id(), f.name);
        for st in f.policy(&app.names).statement {
            let actions: Vec<&str> = st.action.iter().map(|a| a.as_str()).collect();
            let resources: Vec<String> = st.resource.iter().map(|r| r.to_sub()).collect();
            let _ = writeln!(s, "  allow {}", actions.join(", "));
            for r in resources {
                let _ = writeln!(s, "     on {r}");
            }
        }
    }
    s.trim_end().to_string()
}

//! `ferryctl demo`: makes a sample SQLite source, writes a spec next to it, and runs it
//! the way `ferryctl local` does.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::demo_data::create_demo_source;

/// The files a demo made.
#[derive(Debug)]
pub struct DemoFiles {
    /// The sample source database.
    pub source: PathBuf,
    /// Where the copy goes.
    pub target: PathBuf,
    /// The job spec.
    pub spec: PathBuf,
}

/// Creates the demo folder, the sample source and the spec.
pub fn create_demo(dir: &Path, rows: u64) -> anyhow::Result<DemoFiles> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create demo folder {}", dir.display()))?;
    let source = dir.join("source.db");
    let target = dir.join("target.db");
    let spec = dir.join("demo.yaml");
    if target.exists() {
        anyhow::bail!(
            "demo target {} already exists; choose another --dir or remove {}",
            target.display(),
            dir.display()
        );
    }
    let started = std::time::Instant::now();
    let tables = create_demo_source(&source, rows)?;
    eprintln!(
        "made sample source {} in {:.1} s: {}",
        source.display(),
        started.elapsed().as_secs_f64(),
        tables
            .tables
            .iter()
            .map(|(name, rows)| format!("{name} ({rows} rows)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let chunk_rows = (rows / 10).clamp(1_000, 100_000);
    let text = format!(
        "# A ferry job spec: copy every table of source.db into target.db, in chunks of\n\
         # about {chunk_rows} rows, verifying each chunk by row count and checksum.\n\
         name: demo\n\
         source: {{ kind: sqlite, path: source.db }}\n\
         target: {{ kind: sqlite, path: target.db }}\n\
         tables: {{ include: [\"*\"] }}\n\
         schema: create_if_missing\n\
         chunking: {{ target_rows: {chunk_rows} }}\n\
         verify: {{ mode: checksum, on_mismatch: recopy, max_attempts: 3 }}\n\
         throttle: {{ default_concurrency: 4 }}\n"
    );
    std::fs::write(&spec, text).with_context(|| format!("cannot write {}", spec.display()))?;
    Ok(DemoFiles {
        source,
        target,
        spec,
    })
}

//! Times planning one big table: boundaries cut from a key sample (what the planner does
//! for a table of at least `SAMPLE_FROM_ROWS` keyed rows) against the exact ordered scan
//! of every key (`Source::key_boundaries`). `bench/run.sh` runs it; prints one line of
//! JSON.
//!
//! `plan_time --kind postgres --url-env SRC --table public.big --target-rows 500000`

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use ferry_connectors::open_source;
use ferry_coordinator::planner::{
    SplitChoice, boundaries_from_sample, choose_split, choose_split_key,
};
use ferry_model::spec::{EndpointSpec, Location, Secret};

#[derive(Parser)]
struct Args {
    /// Connector kind of the source.
    #[arg(long)]
    kind: String,
    /// Environment variable holding the source's URL.
    #[arg(long)]
    url_env: String,
    /// The table, as ferry names it (`schema.table`, `database.table`).
    #[arg(long)]
    table: String,
    /// Rows per chunk.
    #[arg(long, default_value_t = 500_000)]
    target_rows: u64,
    /// Skip the exact scan (it takes minutes on a big table).
    #[arg(long)]
    no_exact: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url =
        std::env::var(&args.url_env).with_context(|| format!("{} is not set", args.url_env))?;
    let endpoint = EndpointSpec {
        kind: args.kind.clone(),
        location: Location::Env {
            var: args.url_env.clone(),
            value: Secret::new(url),
        },
        zero_dates: None,
        clickhouse: None,
    };
    let source = open_source(&endpoint).await?;
    let name = source
        .list_tables()
        .await?
        .into_iter()
        .find(|name| name.to_string() == args.table)
        .with_context(|| format!("table {} not found", args.table))?;
    let schema = source.describe_table(&name).await?;
    let (key, _) = choose_split_key(&schema, false, true);

    let started = Instant::now();
    let stats = source.key_stats(&schema, &key).await?;
    let stats_secs = started.elapsed().as_secs_f64();
    let SplitChoice::Sample { every_rows, points } = choose_split(&key, &stats, args.target_rows)
    else {
        bail!(
            "table {} is not planned by sampling ({} rows estimated)",
            args.table,
            stats.rows
        );
    };
    let started = Instant::now();
    let sample = source
        .key_sample(&schema, &key, points, stats.rows)
        .await?
        .context("the source declined to sample")?;
    let sampled = boundaries_from_sample(&sample, every_rows);
    let sample_secs = started.elapsed().as_secs_f64();
    let (exact_secs, exact_chunks) = if args.no_exact {
        (None, None)
    } else {
        let started = Instant::now();
        let exact = source.key_boundaries(&schema, &key, every_rows).await?;
        (Some(started.elapsed().as_secs_f64()), Some(exact.len() + 1))
    };
    println!(
        "{}",
        serde_json::json!({
            "kind": args.kind,
            "table": args.table,
            "estimated_rows": stats.rows,
            "stats_secs": stats_secs,
            "sample_points": sample.keys.len(),
            "sample_rows": sample.rows,
            "sample_secs": sample_secs,
            "sample_chunks": sampled.len() + 1,
            "exact_secs": exact_secs,
            "exact_chunks": exact_chunks,
        })
    );
    Ok(())
}

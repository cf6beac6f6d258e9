//! Built-in example handlers that `spool worker` runs, and a template for your own.
//!
//! | queue | kind | payload | result |
//! |---|---|---|---|
//! | `embeddings` | `embed` | `{"texts": ["..."], "dims": 8}` | `{"operation_id", "dims", "vectors": [[f32; dims]]}` (a deterministic fake embedding) |
//! | `exports` | `export` | `{"rows": 1000, "format": "csv"}` | `{"operation_id", "rows", "location"}` |
//! | `agent_tasks` | `echo` | any JSON | the payload |
//!
//! `embed` and `export` report progress through an operation whose ID is
//! `task-<task id>-<attempt>`, carrying the task's correlation ID.

use serde::Deserialize;
use serde_json::json;
use spool_domain::names::{QueueName, StepName, TaskKind};
use spool_domain::progress::{StepRef, StepSpec};

use super::context::{HandlerError, HandlerResult, TaskContext};
use super::runtime::WorkerBuilder;

/// Input of `embeddings` / `embed`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedJob {
    /// Texts to embed (1..=1000).
    pub texts: Vec<String>,
    /// Vector length (1..=1024, default 8).
    #[serde(default = "default_dims")]
    pub dims: usize,
}

fn default_dims() -> usize {
    8
}

/// Input of `exports` / `export`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportJob {
    /// Rows to export (at most 10,000,000).
    pub rows: u64,
    /// `csv` (default) or `jsonl`.
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "csv".to_owned()
}

/// Registers every example handler on `builder`.
pub fn register_examples(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register(QueueName::embeddings(), kind("embed"), embed)
        .register(QueueName::exports(), kind("export"), export)
        .register(QueueName::agent_tasks(), kind("echo"), echo)
}

fn kind(s: &str) -> TaskKind {
    TaskKind::parse(s).expect("example kinds are valid")
}

fn step(name: &str, weight: u32) -> Result<StepSpec, HandlerError> {
    Ok(StepSpec {
        name: StepName::parse(name)?,
        weight,
    })
}

/// A deterministic unit vector for `text` (FNV-1a seeded per dimension).
pub fn fake_embedding(text: &str, dims: usize) -> Vec<f32> {
    let raw: Vec<f32> = (0..dims)
        .map(|d| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (d as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for b in text.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            ((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        raw.into_iter().map(|x| x / norm).collect()
    } else {
        raw
    }
}

/// `embeddings` / `embed`: a fake embedding per text, with progress.
pub async fn embed(ctx: TaskContext, job: EmbedJob) -> HandlerResult {
    if job.texts.is_empty() || job.texts.len() > 1000 {
        return Err(HandlerError::permanent("texts must hold 1..=1000 entries"));
    }
    if !(1..=1024).contains(&job.dims) {
        return Err(HandlerError::permanent("dims must be 1..=1024"));
    }
    let op = ctx
        .start_progress(
            vec![step("tokenize", 1)?, step("embed", 8)?, step("store", 1)?],
            Some(format!("embedding {} texts", job.texts.len())),
        )
        .await?;
    let progress = ctx.progress();
    progress.advance(&op, StepRef::Index(0), 1.0, None).await?;
    let mut vectors = Vec::with_capacity(job.texts.len());
    for (i, text) in job.texts.iter().enumerate() {
        if ctx.is_cancelled() {
            return Err(HandlerError::retry("cancelled"));
        }
        vectors.push(fake_embedding(text, job.dims));
        let fraction = (i + 1) as f64 / job.texts.len() as f64;
        progress
            .advance(&op, StepRef::Index(1), fraction, None)
            .await?;
        tokio::task::yield_now().await;
    }
    progress
        .complete(&op, Some(format!("{} vectors", vectors.len())))
        .await?;
    Ok(Some(json!({
        "operation_id": op,
        "dims": job.dims,
        "vectors": vectors,
    })))
}

/// `exports` / `export`: pretends to write `rows` rows in ten chunks, with progress.
pub async fn export(ctx: TaskContext, job: ExportJob) -> HandlerResult {
    if job.rows > 10_000_000 {
        return Err(HandlerError::permanent("rows must be at most 10,000,000"));
    }
    if !matches!(job.format.as_str(), "csv" | "jsonl") {
        return Err(HandlerError::permanent(format!(
            "format {:?} is not csv or jsonl",
            job.format
        )));
    }
    let op = ctx
        .start_progress(
            vec![step("query", 1)?, step("write", 8)?, step("upload", 1)?],
            Some(format!("exporting {} rows", job.rows)),
        )
        .await?;
    let progress = ctx.progress();
    progress.advance(&op, StepRef::Index(0), 1.0, None).await?;
    for chunk in 1..=10u32 {
        if ctx.is_cancelled() {
            return Err(HandlerError::retry("cancelled"));
        }
        let written = job.rows * u64::from(chunk) / 10;
        progress
            .advance(
                &op,
                StepRef::Index(1),
                f64::from(chunk) / 10.0,
                Some(format!("{written} of {} rows", job.rows)),
            )
            .await?;
        tokio::task::yield_now().await;
    }
    progress.advance(&op, StepRef::Index(2), 1.0, None).await?;
    let location = format!("memory://exports/{}.{}", ctx.task_id(), job.format);
    progress.complete(&op, Some(location.clone())).await?;
    Ok(Some(json!({
        "operation_id": op,
        "rows": job.rows,
        "location": location,
    })))
}

/// `agent_tasks` / `echo`: returns its payload.
pub async fn echo(_ctx: TaskContext, payload: serde_json::Value) -> HandlerResult {
    Ok(Some(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_embeddings_are_deterministic_unit_vectors() {
        let a = fake_embedding("hello", 16);
        assert_eq!(a, fake_embedding("hello", 16));
        assert_ne!(a, fake_embedding("world", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
}

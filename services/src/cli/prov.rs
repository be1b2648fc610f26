//! `dbos prov ...`: what workflows touched, from the provenance they recorded.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::render::{self, Format};
use super::ConnArgs;

#[derive(Debug, Subcommand)]
pub(super) enum ProvCommand {
    /// Which workflow steps read, wrote, created, renamed or removed a file (under any name it
    /// had), oldest first.
    File {
        /// Path in the DBOS file system.
        path: String,
    },
    /// Everything a workflow touched: files, messages, events, streams, topics, commands.
    Workflow {
        /// Workflow ID.
        id: String,
    },
}

const COLUMNS: &[&str] = &[
    "workflow_id",
    "workflow_name",
    "function_id",
    "step",
    "kind",
    "object",
    "bytes",
    "detail",
    "node_id",
];

pub(super) async fn run(conn: &ConnArgs, format: Format, cmd: ProvCommand) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    let mut c = pool.acquire().await?;
    let rows = match cmd {
        ProvCommand::File { path } => {
            let fs = dbos_fs::Fs::new(dbos_fs::Options::default());
            // The file as it is now, to follow it under earlier names; a removed file is
            // still found by its path.
            let inode = match fs.lstat(&mut c, &dbos_fs::Identity::root(), &path).await {
                Ok(st) => Some(st.ino as i64),
                Err(dbos_fs::Error::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            dbos_store::prov::of_object(&mut *c, &path, inode).await?
        }
        ProvCommand::Workflow { id } => {
            let rows = dbos_store::prov::of_workflow(&mut *c, &id).await?;
            if rows.is_empty() {
                dbos_store::workflows::exists(&mut *c, &id).await?;
            }
            rows
        }
    };
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::to_value(r).expect("provenance rows serialise"))
        .collect();
    render::print_json_rows(&rows, COLUMNS, format)?;
    Ok(ExitCode::SUCCESS)
}

//! `dbos fs ...`: the file system without FUSE, and `dbos fs mount`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use dbos_fs::{DirEntry, Fs, Identity, Kind, Options, Stat};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use super::render::{self, Format};
use super::ConnArgs;

#[derive(Debug, Subcommand)]
pub(super) enum FsCommand {
    /// List a directory (or show one file).
    Ls {
        /// Long listing: mode, links, owner, group, size, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// The directory; the root when unset.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Print a file to stdout.
    Cat {
        /// The file.
        path: String,
    },
    /// Copy a local file into the file system, atomically replacing the target's content.
    Put {
        /// The local file.
        local: PathBuf,
        /// Where to put it.
        path: String,
    },
    /// Copy a file out of the file system into a local file.
    Get {
        /// The file.
        path: String,
        /// The local file to write.
        local: PathBuf,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parents too; an existing directory is fine.
        #[arg(short = 'p')]
        parents: bool,
        /// The directory.
        path: String,
    },
    /// Remove a file, symbolic link or empty directory.
    Rm {
        /// Remove a directory and everything below it, in one transaction.
        #[arg(short = 'r')]
        recursive: bool,
        /// What to remove.
        path: String,
    },
    /// Rename or move, atomically replacing the target as rename(2) does.
    Mv {
        /// The source.
        from: String,
        /// The destination (a directory's name ends up inside it).
        to: String,
    },
    /// Show the attributes of a path (a symbolic link itself, not its target).
    Stat {
        /// The path.
        path: String,
    },
    /// Bytes and files below each directory under a path.
    Du {
        /// The directory; the root when unset.
        #[arg(default_value = "/")]
        path: String,
    },
    /// Serve the file system at a local directory through FUSE until Ctrl-C.
    Mount {
        /// The mount point (an existing directory).
        dir: PathBuf,
        /// Seconds the kernel may cache attributes and names.
        #[arg(long, default_value_t = 1.0)]
        attr_ttl_s: f64,
    },
}

fn umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::empty());
    umask(old);
    old.bits()
}

fn mode_string(st: &Stat) -> String {
    let mut s = String::with_capacity(10);
    s.push(match st.kind {
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::File => '-',
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        s.push(if st.mode & bit != 0 { c } else { '-' });
    }
    s
}

fn stat_json(name: &str, st: &Stat) -> Value {
    json!({
        "name": name,
        "ino": st.ino,
        "kind": st.kind,
        "mode": format!("{:04o}", st.mode),
        "perms": mode_string(st),
        "nlink": st.nlink,
        "uid": st.uid,
        "gid": st.gid,
        "size": st.size,
        "atime": st.atime.to_rfc3339(),
        "mtime": st.mtime.to_rfc3339(),
        "ctime": st.ctime.to_rfc3339(),
    })
}

async fn list_all(
    fs: &Fs,
    c: &mut PgConnection,
    who: &Identity,
    path: &str,
) -> Result<Vec<DirEntry>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = fs
            .readdir(
                c,
                who,
                path,
                after.as_deref(),
                fs.options().readdir_page_max,
            )
            .await?;
        match page.last() {
            None => return Ok(all),
            Some(l) => after = Some(l.name.clone()),
        }
        all.extend(page);
    }
}

pub(super) async fn run(conn: &ConnArgs, format: Format, cmd: FsCommand) -> Result<ExitCode> {
    let fs = Fs::new(Options::default());
    let who = Identity::current();
    if let FsCommand::Mount { dir, attr_ttl_s } = cmd {
        return mount(conn, fs, &dir, attr_ttl_s).await;
    }
    let pool = super::pool(conn).await?;
    let mut c = pool.acquire().await?;
    match cmd {
        FsCommand::Ls { long, path } => {
            let mut tx = c.begin().await?;
            let st = fs.stat(&mut tx, &who, &path).await?;
            let entries = if st.kind == Kind::Dir {
                list_all(&fs, &mut tx, &who, &path).await?
            } else {
                vec![DirEntry {
                    name: path.clone(),
                    stat: st,
                }]
            };
            tx.commit().await?;
            if format == Format::Json {
                let rows: Vec<Value> = entries
                    .iter()
                    .map(|e| stat_json(&e.name, &e.stat))
                    .collect();
                render::print_json_rows(&rows, &[], format)?;
            } else if long {
                for e in &entries {
                    println!(
                        "{} {:>3} {:>5} {:>5} {:>10} {} {}",
                        mode_string(&e.stat),
                        e.stat.nlink,
                        e.stat.uid,
                        e.stat.gid,
                        e.stat.size,
                        e.stat.mtime.format("%Y-%m-%d %H:%M"),
                        e.name
                    );
                }
            } else {
                for e in &entries {
                    println!("{}", e.name);
                }
            }
        }
        FsCommand::Cat { path } => {
            // One snapshot for the whole file, however many queries it takes.
            let mut tx = fs.snapshot(&mut c).await?;
            let st = fs.stat(&mut tx, &who, &path).await?;
            if st.kind == Kind::Dir {
                anyhow::bail!("{path}: is a directory");
            }
            fs.read_to(&mut tx, &who, st.ino, tokio::io::stdout())
                .await?;
            tx.commit().await?;
        }
        FsCommand::Put { local, path } => {
            let file = tokio::fs::File::open(&local)
                .await
                .with_context(|| format!("opening {}", local.display()))?;
            if file.metadata().await.is_ok_and(|m| m.is_dir()) {
                anyhow::bail!("{}: is a directory (put copies one file)", local.display());
            }
            let mut tx = c.begin().await?;
            let st = fs
                .create_or_truncate(&mut tx, &who, &path, 0o666 & !umask())
                .await?;
            let n = fs
                .write_from(&mut tx, &who, st.ino, 0, tokio::io::BufReader::new(file))
                .await?;
            tx.commit().await?;
            render::print_message(&json!({ "path": path, "bytes": n }), format)?;
        }
        FsCommand::Get { path, local } => {
            let mut tx = fs.snapshot(&mut c).await?;
            let st = fs.stat(&mut tx, &who, &path).await?;
            if st.kind == Kind::Dir {
                anyhow::bail!("{path}: is a directory (get copies one file)");
            }
            // Into a scratch file beside LOCAL, renamed over it once complete: a refusal or a
            // failure midway leaves LOCAL as it was.
            let name = local.file_name().unwrap_or_default().to_string_lossy();
            let part = local.with_file_name(format!(".{name}.part-{}", std::process::id()));
            let file = tokio::fs::File::create(&part)
                .await
                .with_context(|| format!("creating {}", part.display()))?;
            let n = match fs.read_to(&mut tx, &who, st.ino, file).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&part).await;
                    return Err(e.into());
                }
            };
            tx.commit().await?;
            if let Err(e) = tokio::fs::rename(&part, &local).await {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e).with_context(|| format!("writing {}", local.display()));
            }
            render::print_message(&json!({ "path": path, "bytes": n }), format)?;
        }
        FsCommand::Mkdir { parents, path } => {
            let mode = 0o777 & !umask();
            let mut tx = c.begin().await?;
            if parents {
                fs.mkdir_all(&mut tx, &who, &path, mode).await?;
            } else {
                fs.mkdir(&mut tx, &who, &path, mode).await?;
            }
            tx.commit().await?;
        }
        FsCommand::Rm { recursive, path } => {
            let mut tx = c.begin().await?;
            let st = fs.lstat(&mut tx, &who, &path).await?;
            match (st.kind, recursive) {
                (Kind::Dir, true) => {
                    fs.remove_all(&mut tx, &who, &path).await?;
                }
                (Kind::Dir, false) => fs.rmdir(&mut tx, &who, &path).await?,
                _ => fs.unlink(&mut tx, &who, &path).await?,
            }
            tx.commit().await?;
        }
        FsCommand::Mv { from, to } => {
            let mut tx = c.begin().await?;
            // `mv a dir` moves a into dir, as mv does.
            let target = match fs.stat(&mut tx, &who, &to).await {
                Ok(st) if st.kind == Kind::Dir => {
                    let name = dbos_fs::path::parse(&from)?
                        .split_last()
                        .map(|(n, _)| n.to_owned())
                        .context("the root cannot be moved")?;
                    format!("{}/{name}", to.trim_end_matches('/'))
                }
                _ => to.clone(),
            };
            fs.rename(&mut tx, &who, &from, &target).await?;
            tx.commit().await?;
        }
        FsCommand::Stat { path } => {
            let st = fs.lstat(&mut c, &who, &path).await?;
            let mut v = stat_json(&path, &st);
            if st.kind == Kind::Symlink {
                v["target"] = json!(fs.readlink(&mut c, &who, &path).await?);
            }
            render::print_message(&v, format)?;
        }
        FsCommand::Du { path } => {
            let rows = super::json_rows(&fs.du(&mut c, &who, &path).await?)?;
            render::print_json_rows(&rows, &["bytes", "files", "path"], format)?;
        }
        FsCommand::Mount { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn mount(
    conn: &ConnArgs,
    fs: Fs,
    dir: &std::path::Path,
    attr_ttl_s: f64,
) -> Result<ExitCode> {
    use tokio::signal::unix::{signal, SignalKind};
    anyhow::ensure!(
        attr_ttl_s.is_finite() && attr_ttl_s >= 0.0,
        "--attr-ttl-s must be a number of seconds, 0 or more"
    );
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("{}: not a directory (mount on a directory)", dir.display()),
        Err(e) => anyhow::bail!("{}: {e}", dir.display()),
    }
    let opts = dbos_fs::fuse::MountOptions {
        attr_ttl_ms: (attr_ttl_s * 1000.0) as u64,
        ..dbos_fs::fuse::MountOptions::default()
    };
    let (url, cluster) = conn.attach().await?;
    let pool = dbos_kernel::db::connect(
        &url,
        &dbos_kernel::db::PoolLimits {
            size_max: opts.threads as u32 + 1,
            ..dbos_kernel::db::PoolLimits::default()
        },
    )
    .await?;
    // The schema must exist: `dbos boot` creates it.
    fs.getattr(&mut *pool.acquire().await?, dbos_fs::ROOT)
        .await
        .context("no file system in this database; boot a node with `dbos boot` first")?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut m = dbos_fs::fuse::mount(pool, fs, dir, &opts)?;
    println!("mounted {}", dir.display());
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        () = m.unmounted() => {
            eprintln!("{} was unmounted", dir.display());
        }
    }
    tokio::task::block_in_place(|| m.unmount())?;
    super::leave(cluster).await?;
    Ok(ExitCode::SUCCESS)
}

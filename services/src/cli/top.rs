//! `dbos top`: nodes, queues, running workflows and recent failures, refreshed every second.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, terminal};

use super::ConnArgs;
use crate::observe::{Snapshot, Sort, SucceededCount};

pub(super) async fn run(
    conn: &ConnArgs,
    once: bool,
    interval: Duration,
    mut sort: Sort,
) -> Result<ExitCode> {
    let pool = super::pool(conn).await?;
    let succeeded = SucceededCount::default();
    let interactive = !once && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if !interactive {
        let snap = Snapshot::read(&mut *pool.acquire().await?, &succeeded).await?;
        print!("{}", snap.render_text(sort, usize::MAX));
        return Ok(ExitCode::SUCCESS);
    }
    let _screen = Screen::enter()?;
    loop {
        let snap = Snapshot::read(&mut *pool.acquire().await?, &succeeded).await?;
        let (cols, rows) = terminal::size().unwrap_or((120, 40));
        let text = snap.render_text(sort, cols as usize);
        let mut out = std::io::stdout().lock();
        execute!(
            out,
            cursor::MoveTo(0, 0),
            terminal::Clear(terminal::ClearType::All)
        )?;
        let help = "q quit   a/n/o sort running by age/name/node";
        for line in text.lines().take((rows as usize).saturating_sub(2)) {
            write!(out, "{line}\r\n")?;
        }
        write!(out, "\r\n{help}")?;
        out.flush()?;
        drop(out);
        // Keys until the next refresh.
        let deadline = std::time::Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let key = tokio::task::spawn_blocking(move || -> std::io::Result<Option<KeyEvent>> {
                if event::poll(left)? {
                    if let Event::Key(k) = event::read()? {
                        return Ok(Some(k));
                    }
                }
                Ok(None)
            })
            .await??;
            let Some(k) = key else { continue };
            match (k.code, k.modifiers) {
                (KeyCode::Char('q') | KeyCode::Esc, _) => return Ok(ExitCode::SUCCESS),
                (KeyCode::Char('c'), m) if m.contains(KeyModifiers::CONTROL) => {
                    return Ok(ExitCode::SUCCESS)
                }
                (KeyCode::Char('a'), _) => sort = Sort::Age,
                (KeyCode::Char('n'), _) => sort = Sort::Name,
                (KeyCode::Char('o'), _) => sort = Sort::Node,
                _ => continue,
            }
            break;
        }
    }
}

/// The terminal in raw mode on the alternate screen, restored when dropped.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen> {
        terminal::enable_raw_mode()?;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )?;
        Ok(Screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = execute!(
            std::io::stdout(),
            cursor::Show,
            terminal::LeaveAlternateScreen
        );
        let _ = terminal::disable_raw_mode();
    }
}

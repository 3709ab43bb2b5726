//! The interactive SQL prompt: line editing and history (rustyline), statements that span lines
//! until `;`, backslash commands, and a timing line after each statement.

use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::printer::{Printer, run_text};
use crate::error::{Error, Result};
use crate::output::Format;
use crate::query::Session;

const HELP: &str = "\
  \\d              list tables
  \\d NAME         describe a table (schema.table)
  \\h NAME         commits of a table (its history)
  \\q              quit (or Ctrl-D)
  \\?              this help
SQL statements end with ';' and may span lines. Time travel: SELECT * FROM shop.\"orders@v2\".";

/// Runs the REPL until `\q` or end of input.
pub async fn run(session: &Session) -> Result<()> {
    let mut editor =
        DefaultEditor::new().map_err(|e| Error::Unavailable(format!("terminal: {e}")))?;
    let history = dirs::home_dir().map(|h| h.join(".gamelake_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "gamelake {} — lake {}. Type \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
        session.lake().location().url()
    );
    let mut printer = Printer::new(Format::Table, None, false)?;
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "gamelake> "
        } else {
            "      ... "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Unavailable(format!("terminal: {e}"))),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && trimmed.starts_with('\\') {
            let _ = editor.add_history_entry(trimmed);
            match backslash(trimmed) {
                Some(sql) => run_timed(session, &mut printer, &sql).await,
                None if trimmed == "\\q" => break,
                None => println!("{HELP}"),
            }
            continue;
        }
        if trimmed.is_empty() && buffer.is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            let text = std::mem::take(&mut buffer);
            let _ = editor.add_history_entry(text.trim());
            run_timed(session, &mut printer, &text).await;
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// The SQL a backslash command stands for; `None` for `\q`, `\?` and unknown commands.
fn backslash(command: &str) -> Option<String> {
    let mut parts = command.split_whitespace();
    let name = parts.next()?;
    let arg = parts.next();
    match (name, arg) {
        ("\\d", None) => Some(
            "SELECT table_schema AS schema, table_name AS name, table_type AS type \
             FROM information_schema.tables WHERE table_schema <> 'information_schema' \
             ORDER BY 1, 2"
                .to_string(),
        ),
        ("\\d", Some(table)) => Some(format!("DESCRIBE {table}")),
        ("\\h", Some(table)) => match table.split_once('.') {
            Some((schema, name)) => Some(format!("SELECT * FROM {schema}.\"{name}$history\"")),
            None => Some(format!("SELECT * FROM \"{table}$history\"")),
        },
        _ => None,
    }
}

async fn run_timed(session: &Session, printer: &mut Printer, sql: &str) {
    let started = Instant::now();
    match run_text(session, printer, sql).await {
        Ok(rows) => println!("{rows} rows in {:.3}s", started.elapsed().as_secs_f64()),
        Err(e) => println!("error: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::backslash;

    #[test]
    fn backslash_commands_become_sql() {
        assert!(
            backslash("\\d")
                .unwrap()
                .contains("information_schema.tables")
        );
        assert_eq!(
            backslash("\\d shop.orders").unwrap(),
            "DESCRIBE shop.orders"
        );
        assert_eq!(
            backslash("\\h shop.orders").unwrap(),
            "SELECT * FROM shop.\"orders$history\""
        );
        assert_eq!(backslash("\\q"), None);
    }
}

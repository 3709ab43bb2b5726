//! The SQL files a `[sink]` pipeline names (`query_file`, `run`), read when the pipeline is
//! loaded, so a missing file is an error naming the line before anything runs.

use std::path::Path;

use super::config::PipelineConfig;
use crate::error::{Error, Result};
use crate::toml_files::position_of;

impl PipelineConfig {
    /// Reads each table's `query_file` into its query and its `run` files into `run_sql`;
    /// paths are relative to the pipeline file at `path`, whose `text` locates errors.
    pub(super) fn read_sql_files(&mut self, text: &str, path: &Path) -> Result<()> {
        let read_one = |file: &Path, field: &str| {
            let file = match path.parent() {
                Some(dir) if file.is_relative() => dir.join(file),
                _ => file.to_path_buf(),
            };
            std::fs::read_to_string(&file).map_err(|e| {
                let (line, column) = position_of(text, field);
                let message = format!(
                    "{field} {}: {e} (paths are relative to the pipeline file)",
                    file.display()
                );
                Error::config(path, line, column, &message)
            })
        };
        for table in &mut self.tables {
            if let Some(file) = &table.query_file {
                table.query = Some(read_one(file, "query_file")?);
            }
            table.run_sql = table
                .run
                .iter()
                .map(|file| read_one(file, "run"))
                .collect::<Result<_>>()?;
        }
        Ok(())
    }
}

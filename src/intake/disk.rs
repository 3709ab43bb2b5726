//! Where the write-ahead log's segments are written: the file system, through a seam that
//! tests replace with a disk that keeps only what was synced, to prove that nothing is
//! acknowledged before it is durable.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates the log's segment files.
pub trait Disk: Send + 'static {
    /// Creates segment `path` (which must not exist yet) and makes its name durable.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
}

/// One segment being appended to.
pub trait SegmentFile: Send {
    /// Appends bytes (not yet durable).
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably (after a failed write).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The local file system.
pub struct FileSystem;

impl Disk for FileSystem {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        // The new file's name must survive a crash too.
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Box::new(file))
    }
}

impl SegmentFile for File {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

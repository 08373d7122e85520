//! The on-disk part of the usage queue: an append-only file of JSON lines (one
//! `{"attempts":n,"record":{...}}` per record), mode 0600, fsynced after every batch of
//! appends. Records are read back in order from a read offset; the file is emptied once
//! everything read from it has been acknowledged, and compacted (rewritten through a
//! temporary file and an atomic rename) when its consumed part grows large. A record is
//! removed from the file only after the control plane stored it, so a crash replays it
//! (at least once; the control plane is idempotent by request id).
//!
//! The file is created only when the queue first overflows, and removed when empty.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};

use super::domain::UsageReport;

/// Rewrite the file once this many bytes of it have been read back.
const COMPACT_AFTER_BYTES: u64 = 16 << 20;

/// One line of the file.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Spilled {
    pub attempts: u32,
    pub record: UsageReport,
}

#[derive(Debug)]
pub struct Spill {
    path: PathBuf,
    /// Bytes before this offset were read back into memory.
    read_offset: u64,
    /// The file's length (everything appended).
    len: u64,
    /// Records after `read_offset`.
    unread: usize,
    /// `started_at_ms` of the oldest record appended since the file was last empty: an
    /// upper bound on the age of the oldest unread one.
    oldest_started_ms: Option<i64>,
}

/// The spill's directory, created 0700 when missing (as `tollgate_shared::private_dir`).
async fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

fn open_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    o.mode(0o600);
    o
}

impl Spill {
    /// A spill that knows of no records yet (its file could not be read).
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            read_offset: 0,
            len: 0,
            unread: 0,
            oldest_started_ms: None,
        }
    }

    /// The spill at `path`. A file left by an earlier process (a crash, or records
    /// still unacknowledged at shutdown) is read back from its start.
    pub async fn open(path: PathBuf) -> std::io::Result<Self> {
        let mut spill = Self::empty(path);
        let file = match File::open(&spill.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(spill),
            Err(e) => return Err(e),
        };
        let mut lines = BufReader::new(file).lines();
        while let Some(line) = lines.next_line().await? {
            if let Ok(s) = serde_json::from_str::<Spilled>(&line) {
                spill.unread += 1;
                spill.note_started(s.record.started_at_ms);
            }
        }
        spill.len = tokio::fs::metadata(&spill.path).await?.len();
        // A torn last line (a crash mid-append) must not swallow the next record.
        if spill.len > 0 && !ends_with_newline(&spill.path, spill.len).await? {
            let mut f = open_options().open(&spill.path).await?;
            f.write_all(b"\n").await?;
            f.sync_data().await?;
            spill.len += 1;
        }
        Ok(spill)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn has_unread(&self) -> bool {
        self.unread > 0
    }

    pub fn unread(&self) -> usize {
        self.unread
    }

    pub fn oldest_started_ms(&self) -> Option<i64> {
        self.oldest_started_ms.filter(|_| self.has_unread())
    }

    fn note_started(&mut self, ms: i64) {
        self.oldest_started_ms = Some(self.oldest_started_ms.map_or(ms, |o| o.min(ms)));
    }

    /// Appends records (in order) and syncs them to disk before returning.
    pub async fn append(&mut self, records: &[Spilled]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).await?;
        }
        let mut f = open_options().open(&self.path).await?;
        f.write_all(&buf).await?;
        f.sync_data().await?;
        self.len += buf.len() as u64;
        self.unread += records.len();
        for r in records {
            self.note_started(r.record.started_at_ms);
        }
        Ok(())
    }

    /// Reads up to `max` records back, in order.
    pub async fn read(&mut self, max: usize) -> std::io::Result<Vec<Spilled>> {
        let mut out = Vec::new();
        if max == 0 || !self.has_unread() {
            return Ok(out);
        }
        let mut file = File::open(&self.path).await?;
        file.seek(SeekFrom::Start(self.read_offset)).await?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while out.len() < max && self.unread > 0 {
            line.clear();
            let n = reader.read_line(&mut line).await?;
            if n == 0 {
                // Shorter than counted (changed under us): nothing more to read.
                self.unread = 0;
                break;
            }
            self.read_offset += n as u64;
            match serde_json::from_str::<Spilled>(line.trim_end()) {
                Ok(s) => {
                    self.unread -= 1;
                    out.push(s);
                }
                // Blank lines (a torn line's completion) carry nothing; anything else
                // cannot be billed by this process: keep it in the log for an operator.
                Err(_) if line.trim().is_empty() => {}
                Err(e) => tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    line = line.trim_end(),
                    "unreadable usage spill line skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Everything was read back and acknowledged: the file goes.
    pub async fn clear(&mut self) -> std::io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        match tokio::fs::remove_file(&self.path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.len = 0;
        self.read_offset = 0;
        self.unread = 0;
        self.oldest_started_ms = None;
        Ok(())
    }

    /// Whether the consumed part is large enough to rewrite the file.
    pub fn wants_compaction(&self) -> bool {
        self.read_offset >= COMPACT_AFTER_BYTES
    }

    /// Rewrites the file as `head` (records held in memory that must survive a crash)
    /// followed by the unread part, through a synced temporary file and a rename.
    pub async fn rewrite(&mut self, head: &[Spilled]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for r in head {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        let head_len = buf.len() as u64;
        if self.has_unread() {
            let mut f = File::open(&self.path).await?;
            f.seek(SeekFrom::Start(self.read_offset)).await?;
            tokio::io::AsyncReadExt::read_to_end(&mut f, &mut buf).await?;
        }
        if buf.is_empty() {
            return self.clear().await;
        }
        if let Some(dir) = self.path.parent() {
            create_private_dir(dir).await?;
        }
        let tmp = self.path.with_extension("tmp");
        let mut o = OpenOptions::new();
        o.create(true).write(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(&tmp).await?;
        f.write_all(&buf).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &self.path).await?;
        self.len = buf.len() as u64;
        self.read_offset = head_len;
        Ok(())
    }
}

async fn ends_with_newline(path: &Path, len: u64) -> std::io::Result<bool> {
    let mut f = File::open(path).await?;
    f.seek(SeekFrom::Start(len - 1)).await?;
    let mut b = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut f, &mut b).await?;
    Ok(b[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spilled(id: &str) -> Spilled {
        Spilled {
            attempts: 0,
            record: UsageReport::sample(id),
        }
    }

    fn ids(v: &[Spilled]) -> Vec<&str> {
        v.iter().map(|s| s.record.request_id.as_str()).collect()
    }

    #[tokio::test]
    async fn records_come_back_in_order_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool").join("spill.jsonl");
        let mut s = Spill::open(path.clone()).await.unwrap();
        assert!(!path.exists(), "created only when needed");
        s.append(&[spilled("a"), spilled("b"), spilled("c")])
            .await
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o777, 0o700, "the spill's directory is private");
        }
        assert_eq!(ids(&s.read(2).await.unwrap()), ["a", "b"]);
        s.append(&[spilled("d")]).await.unwrap();
        assert_eq!(s.unread(), 2);

        // A crash now: everything is still there, "a" and "b" included (not acked).
        // A torn half line at the end is ignored, and does not glue onto the next one.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"attempts\":0,\"rec"))
            .unwrap();
        let mut s = Spill::open(path.clone()).await.unwrap();
        assert_eq!(s.unread(), 4);
        s.append(&[spilled("e")]).await.unwrap();
        assert_eq!(ids(&s.read(10).await.unwrap()), ["a", "b", "c", "d", "e"]);
        assert!(!s.has_unread());

        // Compaction keeps what memory still holds, then the unread rest.
        s.append(&[spilled("f")]).await.unwrap();
        s.rewrite(&[spilled("c")]).await.unwrap();
        let mut again = Spill::open(path.clone()).await.unwrap();
        assert_eq!(ids(&again.read(10).await.unwrap()), ["c", "f"]);
        assert_eq!(ids(&s.read(10).await.unwrap()), ["f"]);

        s.clear().await.unwrap();
        assert!(!path.exists());
    }
}

//! Layers that clients with a lazy-pulling snapshotter can start without the whole
//! blob, while every other client pulls them as plain gzip or zstd layers:
//!
//! - [`estargz`]: eStargz (stargz-snapshotter `docs/estargz.md`): each file's
//!   content in its own gzip members (4 MiB chunks), a `stargz.index.json` TOC as
//!   the last tar entry, a 51-byte footer pointing at it.
//! - [`zstd_chunked`]: zstd:chunked (containers/storage `pkg/chunked`): each
//!   file's content in its own zstd frames; the TOC, the tar-split data and a
//!   footer in skippable frames a plain zstd decoder passes over.
//!
//! Both take the canonical tar [`crate::diff`] writes and cut it at the entries
//! ([`tar_events`]); what they add to the layer descriptor (TOC digest and
//! position) comes back as annotations.

pub mod estargz;
pub mod soci;
pub mod tar_events;
mod toc;
pub mod zstd_chunked;

use std::io::{self, Write};

/// Bytes written through, counted: the compressed offsets the TOCs record.
pub(crate) struct Counted<W> {
    pub inner: W,
    pub n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a lazy-format writer hands back besides the blob.
#[derive(Debug, Clone)]
pub struct Finished<W> {
    pub out: W,
    /// The sha256 of the decompressed stream, when it is not the tar that came
    /// in (eStargz adds its landmark and TOC entries).
    pub diff_id: Option<kiln_oci::Digest>,
    /// Layer descriptor annotations.
    pub annotations: Vec<(String, String)>,
}

/// Content chunk size of both formats: eStargz's default (4 MiB).
pub const CHUNK: u64 = 4 << 20;

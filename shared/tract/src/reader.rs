//! Model files read for tract: whole, or streamed into the protobuf decoder.
//!
//! Reads go in pieces of [`PIECE`]: one `wasi:filesystem` read of a big model file (e.g. a
//! 279 MB int8 XLM-R) would exceed what Wasmtime lets one host call hand back ("hostcall
//! fuel"). The `.onnx` file is decoded from a [`FileBuf`], never held whole: loading then
//! peaks at the protobuf plus tract's copy of its tables, not also the file's bytes. That peak
//! sets how far the heap reaches, and so how sparse the pre-initialised memory image is:
//! Wasmtime (and Spin) map an image copy-on-write only while its span is under twice the data
//! it holds, else every instantiation copies it (≈ 17 ms per request for MiniLM).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use prost::bytes::Buf;

/// Bytes per read.
const PIECE: usize = 4 << 20;

/// A whole file.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while (&mut file).take(PIECE as u64).read_to_end(&mut bytes)? > 0 {}
    Ok(bytes)
}

/// A file as a [`Buf`], one piece in memory at a time. A read error ends the buffer early
/// (the decoder then fails) and is kept for [`FileBuf::finish`].
pub struct FileBuf {
    file: File,
    piece: Vec<u8>,
    at: usize,
    /// Bytes not yet handed out, the current piece included.
    left: usize,
    error: Option<std::io::Error>,
}

impl FileBuf {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let left = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        let mut buf = Self {
            file,
            piece: Vec::with_capacity(PIECE),
            at: 0,
            left,
            error: None,
        };
        buf.refill();
        Ok(buf)
    }

    /// Reads the next piece once the current one is used up.
    fn refill(&mut self) {
        while self.at == self.piece.len() && self.left > 0 {
            self.piece.clear();
            self.at = 0;
            let want = self.left.min(PIECE) as u64;
            match (&mut self.file).take(want).read_to_end(&mut self.piece) {
                Ok(0) => self.fail(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) => self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: std::io::Error) {
        self.error = Some(e);
        self.piece.clear();
        self.at = 0;
        self.left = 0;
    }

    /// The read error that cut the buffer short, if any.
    pub fn finish(self) -> std::io::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

impl Buf for FileBuf {
    fn remaining(&self) -> usize {
        self.left
    }

    fn chunk(&self) -> &[u8] {
        &self.piece[self.at..]
    }

    fn advance(&mut self, cnt: usize) {
        let mut cnt = cnt;
        while cnt > 0 {
            let step = cnt.min(self.piece.len() - self.at);
            assert!(step > 0, "advanced past the end of the file");
            self.at += step;
            self.left -= step;
            cnt -= step;
            self.refill();
        }
    }
}

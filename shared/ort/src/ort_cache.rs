//! A cache of ONNX Runtime's optimized models, so that a second start skips graph optimization.
//!
//! The first session built from a model file also writes ONNX Runtime's optimized graph
//! (`SetOptimizedModelFilePath`, initializers in external data so models past 2 GB work) into
//! `$ORT_CACHE_DIR/<key>/model.onnx`; later starts load that file with optimization disabled.
//! The key covers what makes the optimized graph valid: the model file's canonical path, size
//! and modification time (and its external data's), the ONNX Runtime version, the device, the
//! optimization level, and the CPU's instruction-set features: a graph optimized at the highest
//! level may be specific to the hardware it was optimized on (ONNX Runtime's documentation), so
//! a cache baked into an image on one CPU is not used on another (Lambda promises no CPU
//! model): the model is optimized again there. `ORT_CACHE_DIR` defaults to `$EMBEDFN_CACHE/ort` (else
//! `$XDG_CACHE_HOME/embedfn/ort`, else `~/.cache/embedfn/ort`; none of those set: off);
//! `ORT_CACHE_DIR=off` turns the cache off. A directory that cannot
//! be written (Lambda's code directory, a read-only image) only costs a log line.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::runtime::{cache_dir, ORT_VERSION};

/// The cache directory, or `None` when `ORT_CACHE_DIR=off` (or empty), or when it is unset
/// and there is no user cache directory to put it in (no `EMBEDFN_CACHE`, `XDG_CACHE_HOME` or
/// `HOME`, as in Lambda): never a directory relative to the working directory.
fn root() -> Option<PathBuf> {
    match std::env::var_os("ORT_CACHE_DIR") {
        Some(v) if v.is_empty() || v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => ["EMBEDFN_CACHE", "XDG_CACHE_HOME", "HOME"]
            .iter()
            .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
            .then(|| cache_dir().join("ort")),
    }
}

fn stat(p: &Path) -> String {
    fs::metadata(p).map_or_else(
        |_| "-".into(),
        |m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{t}", m.len())
        },
    )
}

fn fnv(key: &str) -> String {
    (0u64..2)
        .map(|lane| {
            let h = key.bytes().fold(0xcbf2_9ce4_8422_2325 ^ lane, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            format!("{h:016x}")
        })
        .collect()
}

/// The CPU's instruction-set features as the kernel reports them (`flags` on x86-64,
/// `Features` on arm64), sorted; empty where they cannot be read.
fn cpu_features() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let line = info
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split_once(':'))
        .map_or("", |(_, v)| v);
    let mut flags: Vec<&str> = line.split_whitespace().collect();
    flags.sort_unstable();
    flags.join(" ")
}

/// One model's entry in the cache.
pub struct Entry {
    dir: PathBuf,
}

/// Where a session's optimized model goes while it is written (renamed into place after).
pub struct Pending {
    dir: PathBuf,
    target: PathBuf,
}

/// The ONNX file name inside an entry, and its external initializers.
pub const MODEL: &str = "model.onnx";
/// The external-initializer file the optimized model refers to.
pub const DATA: &str = "model.onnx.data";

impl Entry {
    /// The entry for `model` on `device` at `level` on this CPU, or `None` when the cache is off.
    pub fn new(model: &Path, device: &str, level: &str) -> Option<Self> {
        Self::keyed(root()?, model, device, level, &cpu_features())
    }

    fn keyed(root: PathBuf, model: &Path, device: &str, level: &str, cpu: &str) -> Option<Self> {
        let canonical = fs::canonicalize(model).unwrap_or_else(|_| model.to_path_buf());
        let name = canonical.to_string_lossy().into_owned();
        let key = format!(
            "{name}\0{}\0{}\0{}\0{ORT_VERSION}\0{device}\0{level}\0{cpu}",
            stat(&canonical),
            stat(Path::new(&format!("{name}_data"))),
            stat(Path::new(&format!("{name}.data"))),
        );
        let stem = canonical
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        Some(Self {
            dir: root.join(format!("{stem}-{device}-{}", fnv(&key))),
        })
    }

    /// The cached optimized model, when a complete one is there.
    pub fn ready(&self) -> Option<PathBuf> {
        let model = self.dir.join(MODEL);
        self.dir.join(".complete").is_file().then_some(model)
    }

    /// A private directory to write the optimized model into, or `None` (logged) when the cache
    /// directory cannot be written.
    pub fn begin(&self) -> Option<Pending> {
        let tmp = self
            .dir
            .with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        match fs::create_dir_all(&tmp) {
            Ok(()) => Some(Pending {
                dir: tmp,
                target: self.dir.clone(),
            }),
            Err(e) => {
                tracing::info!(dir = %tmp.display(), "optimized-model cache not writable ({e}); optimizing at every start");
                None
            }
        }
    }
}

impl Pending {
    /// The path ONNX Runtime writes the optimized model to.
    pub fn model(&self) -> PathBuf {
        self.dir.join(MODEL)
    }

    /// Moves the written model into place (another process may have won the race: fine).
    pub fn finish(self) {
        let ok = self.model().is_file() && fs::write(self.dir.join(".complete"), b"").is_ok();
        if ok && fs::rename(&self.dir, &self.target).is_ok() {
            tracing::info!(dir = %self.target.display(), "optimized model cached");
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Drops a half-written entry.
    pub fn abandon(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_made_on_one_cpu_is_not_used_on_another() {
        let root = std::env::temp_dir().join("embedfn-ort-cache-key-test");
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let entry = |cpu| {
            Entry::keyed(root.clone(), &model, "cpu", "all", cpu)
                .unwrap()
                .dir
        };
        let avx512 = entry("avx2 avx512f avx512_vnni fma sse4_1");
        assert_eq!(avx512, entry("avx2 avx512f avx512_vnni fma sse4_1"));
        assert_ne!(
            avx512,
            entry("avx2 fma sse4_1"),
            "an AVX2-only CPU must not load it"
        );
        assert!(!cpu_features().contains('\n'));
    }
}

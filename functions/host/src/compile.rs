//! The Wasmtime engine (async, pooling allocator), compiling components once and caching the
//! machine code on disk (a 20 MB component takes Wasmtime tens of seconds to compile), and
//! Wizer pre-initialisation.

use std::path::PathBuf;

use anyhow::Context;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wizer::Wizer;

use crate::guest::{self, Guest};

/// Instances alive at once (concurrent requests).
const INSTANCES: u32 = 64;

/// How often the engine's epoch advances: the resolution of each instance's deadline.
pub const EPOCH: std::time::Duration = std::time::Duration::from_millis(10);

/// The engine every component runs on; an instance may grow its memory to `max_memory_mb`.
pub fn engine(max_memory_mb: u64) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(INSTANCES)
        .total_core_instances(INSTANCES * 4)
        .total_memories(INSTANCES * 2)
        .total_tables(INSTANCES * 4)
        .max_memory_size(usize::try_from(max_memory_mb << 20)?);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Guests are interrupted at their deadline (`Store::set_epoch_deadline`): one thread
    // advances the epoch for the process's lifetime.
    config.epoch_interruption(true);
    let engine = Engine::new(&config)?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("embedfn-epoch".into())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH);
            }
        })?;
    Ok(engine)
}

/// `wasm` compiled for `engine`, from the cache when it was compiled before.
pub fn component(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
    let dir = embedfn_ort::runtime::cache_dir().join("wasm");
    let path = dir.join(format!("{}.cwasm", key(engine, wasm)));
    if path.is_file() {
        // SAFETY: the file is our own serialization for this engine configuration (the key
        // includes Wasmtime's compatibility hash), written atomically below.
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            tracing::info!(cache = %path.display(), "component loaded precompiled");
            return Ok(c);
        }
    }
    let started = std::time::Instant::now();
    let bytes = engine.precompile_component(wasm)?;
    tracing::info!(ms = started.elapsed().as_millis(), "component compiled");
    if std::fs::create_dir_all(&dir).is_ok() {
        let tmp = PathBuf::from(format!("{}.{}", path.display(), std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    // SAFETY: `bytes` was produced by `precompile_component` on this engine just now.
    Ok(unsafe { Component::deserialize(engine, &bytes) }?)
}

/// A stable key for the component bytes and the engine's compatibility.
fn key(engine: &Engine, wasm: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    wasm.hash(&mut h);
    format!("{:016x}-{}", h.finish(), wasm.len())
}

/// Runs the component's `wizer-initialize` with real WASI (its model directories and
/// environment) and returns the component with that memory baked in.
pub async fn snapshot(engine: &Engine, guest: &Guest, wasm: &[u8]) -> anyhow::Result<Vec<u8>> {
    let linker = guest::linker(engine, true)?;
    let mut store = Store::new(engine, guest.store_data()?);
    // Pre-initialisation has no request deadline.
    store.set_epoch_deadline(u64::MAX / 2);
    // Wizer reads the whole linear memory back through the component model; a component with
    // a model inside (the tract build) has more of it than the default 128 MiB allowance.
    store.set_hostcall_fuel(usize::MAX);
    let (snap, _) = Wizer::new()
        .init_func("wizer-initialize")
        // Without it Wizer writes a component whose exports no longer line up.
        .keep_init_func(true)
        .run_component(&mut store, wasm, async |store, component| {
            linker.instantiate_async(store, component).await
        })
        .await
        .map_err(anyhow::Error::from)
        .context("pre-initialising the component")?;
    Ok(snap)
}

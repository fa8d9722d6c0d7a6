//! `EMBEDFN_PROFILE` in the component's live environment: every inference logs (stderr) its
//! time per tract op type, and every request its total time, so the component's own time can
//! be split between tokenizing/pooling, tract's ops and embedfn's int8 matmul.
//! `EMBEDFN_PROFILE=nodes` also logs every node's time, op and output shape, in plan order.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;

/// The value of `EMBEDFN_PROFILE`, when set (read live: std's copy is frozen by
/// pre-initialisation).
pub fn setting() -> Option<String> {
    #[cfg(target_os = "wasi")]
    return wasip2::cli::environment::get_environment()
        .into_iter()
        .find_map(|(k, v)| (k == "EMBEDFN_PROFILE").then_some(v));
    #[cfg(not(target_os = "wasi"))]
    std::env::var("EMBEDFN_PROFILE").ok()
}

/// Runs `plan` on `inputs`, timing each node; logs the totals per op type, longest first, and
/// with `nodes` every node's.
pub fn run(
    plan: &Arc<TypedRunnableModel>,
    inputs: TVec<TValue>,
    nodes: bool,
) -> TractResult<TVec<TValue>> {
    let shape = inputs.first().map(|t| t.shape().to_vec());
    let started = Instant::now();
    let mut totals: HashMap<String, (Duration, usize)> = HashMap::new();
    let mut each: Vec<(Duration, String)> = Vec::new();
    let outputs = plan
        .spawn()?
        .run_plan_with_eval(inputs, |ctx, state, node, input| {
            let t = Instant::now();
            let out = eval(ctx, state, node, input);
            let took = t.elapsed();
            let entry = totals.entry(node.op().name().to_string()).or_default();
            entry.0 += took;
            entry.1 += 1;
            if nodes {
                let shape = out.as_ref().ok().and_then(|o| o.first()).map(|t| t.shape());
                let label = format!("{} {} {shape:?}", node.name, node.op().name());
                each.push((took, label));
            }
            out
        })?;
    let total = started.elapsed();
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    let ops: Vec<String> = rows
        .iter()
        .map(|(name, (d, n))| format!("{name} {:.2} ms/{n}", d.as_secs_f64() * 1e3))
        .collect();
    eprintln!(
        "embedfn profile: forward {shape:?} {:.2} ms: {}",
        total.as_secs_f64() * 1e3,
        ops.join(", ")
    );
    for (took, label) in &each {
        eprintln!(
            "embedfn profile:   {:.2} ms {label}",
            took.as_secs_f64() * 1e3
        );
    }
    Ok(outputs)
}

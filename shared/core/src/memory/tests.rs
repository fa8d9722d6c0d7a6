use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::spec::{AttentionKind, GraphFacts};

const GIB: u64 = 1 << 30;

/// jina-embeddings-v3's shape: 24 layers × 1024, 16 heads, FFN 4096.
fn jina(attention: AttentionKind) -> PassModel {
    PassModel {
        hidden: 1024,
        heads: 16,
        intermediate: 4096,
        attention,
        element: 4,
        score_blocks: 0,
    }
}

#[test]
fn group_query_attention_keeps_a_score_block_per_thread() {
    // The 0.6B decoder (jina-v5-small-scale), fused into GroupQueryAttention, 2 threads:
    // measured 1141 MiB for a pass of 8192 tokens and 14,821 MiB at 32,768 (peak RSS less the
    // resident weights; docs/benchmarks.md). The estimate must not be below either.
    let facts = GraphFacts::from_op_types(["If", "GroupQueryAttention", "Softmax"]);
    assert_eq!(facts.score_blocks, 1);
    let model = PassModel {
        hidden: 1024,
        heads: 16,
        intermediate: 3072,
        attention: facts.attention,
        element: 4,
        score_blocks: 2,
    };
    const MIB: u64 = 1 << 20;
    assert!(
        model.bytes(1, 8192) > 1141 * MIB,
        "{}",
        model.bytes(1, 8192) / MIB
    );
    assert!(model.bytes(1, 32768) > 14_821 * MIB);
    assert!(model.bytes(1, 32768) < 2 * 14_821 * MIB);
    // MultiHeadAttention (flash-tiled) keeps none.
    assert_eq!(
        GraphFacts::from_op_types(["MultiHeadAttention"]).score_blocks,
        0
    );
}

#[test]
fn plain_attention_grows_with_the_square_and_fused_linearly() {
    let plain = jina(AttentionKind::Plain);
    let fused = jina(AttentionKind::Fused);
    // Measured (ONNX Runtime 1.31, one 16-head layer): 4096 tokens took 2.3 GiB with the plain
    // pattern, 277 MiB fused; the estimate must not be below either.
    assert!(plain.bytes(1, 4096) > 2 * GIB, "{}", plain.bytes(1, 4096));
    assert!(plain.bytes(1, 4096) < 4 * GIB);
    assert!(fused.bytes(1, 4096) < GIB / 2);
    // 8192 tokens need ~9 GiB with plain attention (the figure).
    assert!(plain.bytes(1, 8192) > 8 * GIB);
    // Quadratic vs linear in the sequence, linear in the batch.
    let ratio = plain.bytes(1, 8192) as f64 / plain.bytes(1, 4096) as f64;
    assert!(ratio > 3.5, "{ratio}");
    let ratio = fused.bytes(1, 8192) as f64 / fused.bytes(1, 4096) as f64;
    assert!(ratio < 2.1, "{ratio}");
    assert!(plain.bytes(4, 512) > 3 * plain.bytes(1, 512));
    assert!(jina(AttentionKind::None).bytes(1, 4096) < fused.bytes(1, 4096));
    // The fused files of scripts/optimize-model.sh: fused alone, plain in a padded batch.
    let both = jina(AttentionKind::FusedWhenAlone);
    assert_eq!(both.bytes(1, 8192), fused.bytes(1, 8192));
    assert_eq!(both.bytes(4, 512), plain.bytes(4, 512));
}

#[test]
fn longest_is_the_largest_length_that_fits() {
    let m = jina(AttentionKind::Plain);
    let cap = GIB;
    let n = m.longest(cap, 8192);
    assert!(m.bytes(1, n) <= cap && m.bytes(1, n + 1) > cap, "{n}");
    assert_eq!(m.longest(u64::MAX, 8192), 8192);
    assert_eq!(m.longest(0, 8192), 0);
}

#[test]
fn graph_facts_from_op_types() {
    let f = GraphFacts::from_op_types(["MatMul", "Softmax", "MatMul"]);
    assert_eq!(
        (f.batch_invariant, f.attention),
        (true, AttentionKind::Plain)
    );
    let f = GraphFacts::from_op_types(["DynamicQuantizeLinear", "MatMulInteger", "Softmax"]);
    assert!(!f.batch_invariant);
    let f = GraphFacts::from_op_types(["If", "GroupQueryAttention", "Softmax"]);
    assert_eq!(f.attention, AttentionKind::FusedWhenAlone);
    let f = GraphFacts::from_op_types(["MultiHeadAttention", "Add"]);
    assert_eq!(f.attention, AttentionKind::Fused);
    assert_eq!(
        GraphFacts::from_op_types(["Gather", "Add"]).attention,
        AttentionKind::None
    );
}

#[test]
fn default_limit_prefers_cgroup_then_lambda_then_physical() {
    let g = GIB;
    assert_eq!(
        default_limit(Some(2 * g), Some(4096), Some(16 * g)),
        (1.8 * g as f64) as u64
    );
    // An unlimited cgroup (a huge number) falls back to Lambda's size.
    assert_eq!(
        default_limit(Some(u64::MAX / 2), Some(1024), Some(16 * g)),
        (0.9 * g as f64) as u64
    );
    assert_eq!(default_limit(None, None, Some(10 * g)), 9 * g);
}

#[test]
fn sizes_parse_with_binary_suffixes() {
    assert_eq!(parse_bytes("2G").unwrap(), 2 * GIB);
    assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
    assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 * GIB / 2);
    assert_eq!(parse_bytes(" 1000 ").unwrap(), 1000);
    assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("2X").is_err());
}

#[test]
fn reservations_admit_concurrent_passes_under_the_budget() {
    let budget = Arc::new(Budget::new(1000, 8, Duration::from_secs(5)));
    budget.set_resident(200).unwrap();
    assert_eq!(budget.capacity(), 800);
    assert!(budget.set_resident(1000).is_err());
    budget.set_resident(200).unwrap();
    // Each pass takes 300: at most two run at once (600 ≤ 800 < 900).
    let peak = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (budget, peak) = (budget.clone(), peak.clone());
            std::thread::spawn(move || {
                let r = budget.reserve(300).unwrap();
                peak.fetch_max(budget.state().reserved, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
                drop(r);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 600);
    let s = budget.state();
    assert_eq!((s.reserved, s.running, s.waiting, s.refused), (0, 0, 0, 0));
}

#[test]
fn waiting_is_bounded_in_number_and_time() {
    let budget = Budget::new(1000, 1, Duration::from_millis(50));
    let held = budget.reserve(900).unwrap();
    // Nothing frees memory: the wait ends with a 503 carrying Retry-After.
    let e = budget.reserve(500).unwrap_err();
    assert_eq!(e.status(), 503);
    assert_eq!(e.retry_after(), Some(1));
    // A pass larger than the capacity still runs once nothing else does.
    drop(held);
    let big = budget.reserve(5000).unwrap();
    assert_eq!(budget.state().reserved, 5000);
    drop(big);
    // With one waiter already waiting, the next is refused at once.
    let budget = Arc::new(Budget::new(1000, 1, Duration::from_millis(300)));
    let held = budget.reserve(900).unwrap();
    let waiter = {
        let b = budget.clone();
        std::thread::spawn(move || b.reserve(500).map(|_| ()))
    };
    while budget.state().waiting == 0 {
        std::thread::yield_now();
    }
    let e = budget.reserve(500).unwrap_err();
    assert_eq!(e.status(), 503);
    assert!(e.to_string().contains("too many passes wait"), "{e}");
    drop(held);
    waiter.join().unwrap().unwrap();
    assert_eq!(budget.state().refused, 1);
}

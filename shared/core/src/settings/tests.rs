use std::collections::HashMap;

use super::*;

fn read(vars: &[(&str, &str)], place: Place) -> Parsed<Settings> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned(), place)
}

fn native(vars: &[(&str, &str)]) -> Parsed<Settings> {
    read(vars, Place::Native)
}

#[test]
fn defaults_follow_the_seeds() {
    let s = native(&[]).unwrap();
    assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 8000));
    assert_eq!(s.embeddings_models, ["jinaai/jina-embeddings-v3"]);
    assert_eq!(
        s.reranker_models,
        ["jinaai/jina-reranker-v2-base-multilingual"]
    );
    assert_eq!(s.quantization, Quantization::None);
    assert_eq!(s.cuda, Cuda::Auto);
    assert!(s.task_instructions && s.dynamic_batching && s.api_key.is_none());
    assert_eq!(s.model_cache_dir, "models");
    assert_eq!((s.max_memory, s.intra_threads), (None, None));
    assert_eq!(s.admission, Admission::default());
    assert_eq!(s.limits, Limits::default());
    assert_eq!(s.max_request_tokens, MAX_REQUEST_TOKENS);
    let lambda = native(&[
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008"),
    ])
    .unwrap();
    assert_eq!(lambda.model_cache_dir, "/tmp/models");
    assert_eq!(lambda.lambda_memory_mb, Some(3008));
    assert!(!lambda.snap_start);
    let snap = native(&[("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start")]).unwrap();
    assert!(snap.snap_start);
    let managed = native(&[
        ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ("AWS_LAMBDA_MAX_CONCURRENCY", "8"),
    ])
    .unwrap();
    assert_eq!(managed.lambda_concurrency, 8);
    assert!(
        managed.dynamic_batching,
        "concurrent invocations batch together"
    );
    assert!(lambda.in_lambda && !lambda.dynamic_batching);
}

#[test]
fn a_component_reads_its_mounted_directories() {
    let s = read(&[], Place::Component).unwrap();
    assert_eq!(s.embeddings_models, ["/models/embedder"]);
    assert!(s.reranker_models.is_empty());
}

/// One table: each variable, a value, and what it must parse to (or that it is refused).
#[test]
fn every_variable_means_the_same_everywhere() {
    type Check = fn(&Settings) -> bool;
    let rows: &[(&str, &str, Option<Check>)] = &[
        ("TASK_INSTRUCTIONS", "off", Some(|s| !s.task_instructions)),
        ("TASK_INSTRUCTIONS", "0", Some(|s| !s.task_instructions)),
        ("TASK_INSTRUCTIONS", "yes", Some(|s| s.task_instructions)),
        ("TASK_INSTRUCTIONS", "maybe", None),
        (
            "DEFAULT_TASK",
            "retrieval.query",
            Some(|s| s.default_task.as_deref() == Some("retrieval.query")),
        ),
        (
            "MAX_BODY_BYTES",
            "1024",
            Some(|s| s.limits.max_body_bytes == 1024),
        ),
        ("MAX_INPUTS", "3", Some(|s| s.limits.max_inputs == 3)),
        ("MAX_DOCUMENTS", "4", Some(|s| s.limits.max_documents == 4)),
        ("MAX_DOCUMENTS", "-1", None),
        (
            "MAX_REQUEST_TOKENS",
            "0",
            Some(|s| s.max_request_tokens == 1),
        ),
        (
            "MAX_BATCH_TOKENS",
            "2048",
            Some(|s| s.batch(BatchLimits::default()).max_tokens == 2048),
        ),
        (
            "MAX_BATCH_SIZE",
            "8",
            Some(|s| s.batch_on("cuda").max_size == 8 && s.batch_on("cpu").max_size == 8),
        ),
        ("MAX_BATCH_SIZE", "many", None),
        (
            "API_KEY",
            "s3cret",
            Some(|s| s.api_key.as_ref().is_some_and(|k| k.matches("s3cret"))),
        ),
        (
            "ONNX_QUANTIZATION",
            "INT8",
            Some(|s| s.quantization == Quantization::Int8),
        ),
        ("ONNX_QUANTIZATION", "q3", None),
        ("USE_CUDA", "false", Some(|s| s.cuda == Cuda::Off)),
        ("USE_CUDA", "maybe", None),
        ("PORT", "http", None),
        ("PORT", "70000", None),
        (
            "ORT_INTRA_THREADS",
            "0",
            Some(|s| s.intra_threads == Some(1)),
        ),
        (
            "MAX_MEMORY",
            "768M",
            Some(|s| s.max_memory == Some(768 << 20)),
        ),
        ("MAX_MEMORY", "lots", None),
        (
            "MAX_QUEUE_WAIT_MS",
            "250",
            Some(|s| s.admission.max_wait == Duration::from_millis(250)),
        ),
        (
            "MAX_CONCURRENT_REQUESTS",
            "0",
            Some(|s| s.admission.max_running == 1),
        ),
        ("DYNAMIC_BATCHING", "false", Some(|s| !s.dynamic_batching)),
        (
            "BATCH_WAIT_MS",
            "5",
            Some(|s| s.batch_wait == Duration::from_millis(5)),
        ),
        (
            "EMBEDDINGS_MODEL_ID",
            " a/b , ./c,a/b,, ",
            Some(|s| s.embeddings_models == ["a/b", "./c"]),
        ),
        (
            "RERANKER_MODEL_ID",
            "NONE",
            Some(|s| s.reranker_models.is_empty()),
        ),
        ("HOST", "  ", Some(|s| s.host == "127.0.0.1")),
        ("HOST", "0.0.0.0", Some(|s| s.host == "0.0.0.0")),
        (
            "MAX_EMBED_ALL_VALUES",
            "10",
            Some(|s| s.limits.max_embed_all_values == 10),
        ),
    ];
    for place in [Place::Native, Place::Component] {
        for (name, value, check) in rows {
            let parsed = read(&[(name, value)], place);
            match (check, parsed) {
                (Some(check), Ok(s)) => assert!(check(&s), "{name}={value:?} ({place:?})"),
                (None, Err(e)) => assert_eq!(e.name, *name),
                (Some(_), Err(e)) => panic!("{name}={value:?} refused: {e}"),
                (None, Ok(_)) => panic!("{name}={value:?} was accepted"),
            }
        }
    }
}

#[test]
fn cuda_takes_bigger_passes_unless_the_size_is_set() {
    let s = native(&[]).unwrap();
    assert_eq!(s.batch_on("cpu").max_size, 16);
    assert_eq!(
        s.batch_on("cuda").max_size,
        BatchLimits::ACCELERATOR_MAX_SIZE
    );
    assert_eq!(s.batch(BatchLimits::default().on_one_thread()).max_size, 4);
}

#[test]
fn the_host_forwards_every_component_setting() {
    let env: HashMap<&str, &str> = [("API_KEY", "k"), ("MAX_BATCH_SIZE", "2"), ("PORT", "9")]
        .into_iter()
        .collect();
    let forwarded = Settings::for_component(|k| env.get(k).map(|v| v.to_string()));
    assert_eq!(
        forwarded,
        [
            ("MAX_BATCH_SIZE".to_string(), "2".to_string()),
            ("API_KEY".to_string(), "k".to_string())
        ]
    );
    // Every variable the parser reads is in the table.
    let read = std::cell::RefCell::new(Vec::new());
    let _ = Settings::from_lookup(
        |k| {
            read.borrow_mut().push(k.to_string());
            None
        },
        Place::Native,
    );
    for name in read
        .borrow()
        .iter()
        .filter(|n| !n.starts_with("AWS_LAMBDA_"))
    {
        assert!(
            SETTINGS.iter().any(|s| s.name == name),
            "{name} is read but not in SETTINGS"
        );
    }
    let lambdas = read
        .borrow()
        .iter()
        .filter(|n| n.starts_with("AWS_LAMBDA_"))
        .count();
    assert_eq!(SETTINGS.len(), read.borrow().len() - lambdas);
}

#[test]
fn the_docs_show_this_table() {
    let docs = include_str!("../../../../docs/configuration.md");
    let table = markdown_table();
    assert!(
        docs.contains(&table),
        "docs/configuration.md must hold the settings table; paste:\n{table}"
    );
}

//! The command line, in the spirit of `wasmtime serve`.

use std::path::PathBuf;

/// Usage text.
pub const USAGE: &str = "usage:
  embedfn-host [serve] COMPONENT.wasm [--graph NAME=DIR]... [--listen ADDR] [--env K=V]...
                                      [--snapshot] [--no-nn] [--max-memory MB]
  embedfn-host snapshot COMPONENT.wasm OUT.wasm [--graph NAME=DIR]... [--env K=V]...

serve     serves the component over HTTP, a fresh instance per request
snapshot  pre-initialises the component (Wizer): tokenizers and model configs in its memory

  --graph NAME=DIR  a model directory: its ONNX graph is preloaded for wasi:nn load-by-name
                    as NAME, and the directory is mounted read-only at /models/NAME, with
                    EMBEDDINGS_MODEL_ID or RERANKER_MODEL_ID pointing at it (by its config.json).
                    Without --graph: EMBEDDINGS_MODEL_ID and RERANKER_MODEL_ID (local
                    directories or Hugging Face ids, as for the native server).
  --listen ADDR     default HOST:PORT from the environment, else 127.0.0.1:8000
  --env K=V         an environment variable for the component (TASK_INSTRUCTIONS, API_KEY, …)
  --snapshot        pre-initialise in memory before serving
  --no-nn           do not provide wasi:nn (for components that run their model inside)
  --max-memory MB   linear memory one instance may use (default 4096); beyond it the
                    instance traps and its request answers 500

ONNX Runtime settings come from the environment as for the native server (ORT_DYLIB_PATH,
ORT_INTRA_THREADS, USE_CUDA, ONNX_QUANTIZATION).";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Serve the component.
    Serve {
        /// Listen address (`None`: from the environment).
        listen: Option<String>,
        /// Pre-initialise before serving.
        snapshot: bool,
        /// Link `wasi:nn`.
        nn: bool,
        /// Linear memory per instance, MiB.
        max_memory_mb: u64,
    },
    /// Write a pre-initialised copy of the component.
    Snapshot {
        /// Where.
        out: PathBuf,
    },
}

/// Parsed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// The command.
    pub command: Command,
    /// The component file.
    pub component: PathBuf,
    /// `--graph NAME=DIR`.
    pub graphs: Vec<(String, PathBuf)>,
    /// `--env K=V`.
    pub env: Vec<(String, String)>,
}

fn pair(flag: &str, value: Option<String>) -> Result<(String, String), String> {
    let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
    value
        .split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{flag} {value}: expected NAME=VALUE"))
}

/// Parses `args` (without the program name).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut args = args.into_iter().peekable();
    let snapshot_cmd = match args.peek().map(String::as_str) {
        Some("snapshot") => {
            args.next();
            true
        }
        Some("serve") => {
            args.next();
            false
        }
        _ => false,
    };
    let (mut positional, mut graphs, mut env) = (Vec::new(), Vec::new(), Vec::new());
    let (mut listen, mut snapshot, mut nn, mut max_memory_mb) = (None, false, true, 4096);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--graph" => {
                let (name, dir) = pair("--graph", args.next())?;
                graphs.push((name, PathBuf::from(dir)));
            }
            "--env" => env.push(pair("--env", args.next())?),
            "--listen" => listen = Some(args.next().ok_or("--listen needs an address")?),
            "--snapshot" => snapshot = true,
            "--no-nn" => nn = false,
            "--max-memory" => {
                let v = args.next().ok_or("--max-memory needs a size in MiB")?;
                max_memory_mb = v
                    .parse()
                    .ok()
                    .filter(|&mb| mb > 0)
                    .ok_or_else(|| format!("--max-memory {v}: expected MiB"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ => positional.push(arg),
        }
    }
    let want = if snapshot_cmd { 2 } else { 1 };
    if positional.len() != want {
        return Err(format!(
            "expected {want} file argument(s), got {}",
            positional.len()
        ));
    }
    let component = PathBuf::from(&positional[0]);
    let command = if snapshot_cmd {
        Command::Snapshot {
            out: PathBuf::from(&positional[1]),
        }
    } else {
        Command::Serve {
            listen,
            snapshot,
            nn,
            max_memory_mb,
        }
    };
    Ok(Args {
        command,
        component,
        graphs,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn serve_and_snapshot_forms() {
        let a = args("c.wasm --graph m=/models/m --listen 127.0.0.1:9 --env A=b=c").unwrap();
        assert_eq!(a.component, PathBuf::from("c.wasm"));
        assert_eq!(a.graphs, vec![("m".into(), PathBuf::from("/models/m"))]);
        assert_eq!(a.env, vec![("A".into(), "b=c".into())]);
        assert_eq!(
            a.command,
            Command::Serve {
                listen: Some("127.0.0.1:9".into()),
                snapshot: false,
                nn: true,
                max_memory_mb: 4096,
            }
        );
        let s = args("snapshot in.wasm out.wasm --graph m=d").unwrap();
        assert_eq!(
            s.command,
            Command::Snapshot {
                out: "out.wasm".into()
            }
        );
        assert!(args("c.wasm --graph nodir").is_err());
        assert!(args("c.wasm --bogus").is_err());
        assert!(args("snapshot only.wasm").is_err());
    }
}

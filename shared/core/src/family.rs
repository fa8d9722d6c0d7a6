//! Model families published as one repository per task, served as one model.
//!
//! jina-embeddings-v5-text ships its four task adapters merged into four sibling repositories
//! (`jinaai/jina-embeddings-v5-text-small-retrieval`, `…-text-matching`, `…-classification`,
//! `…-clustering`; the same for `-nano`). A server configured with the family's id
//! (`EMBEDDINGS_MODEL_ID=jinaai/jina-embeddings-v5-text-small`) loads the members
//! ([`expand`]), and a request that names the family (or no model) is served by the member of its
//! task ([`route`]): `task` names a member (`text-matching`), Jina v3's task names and
//! `input_type` pick the retrieval member and its `query` / `document` prompt. Each member's
//! prompts come from its own `config_sentence_transformers.json`; nothing here knows them.
//!
//! A family is data: its repository name and its tasks, in the order members load (the first
//! is the default).

/// A family whose tasks are sibling repositories named `<name>-<task>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    /// The repository name (the id's last path segment), without a task.
    pub name: &'static str,
    /// Its tasks, the default first.
    pub tasks: &'static [&'static str],
}

const V5_TASKS: &[&str] = &["retrieval", "text-matching", "classification", "clustering"];

/// The families embedfn knows.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "jina-embeddings-v5-text-small",
        tasks: V5_TASKS,
    },
    Family {
        name: "jina-embeddings-v5-text-nano",
        tasks: V5_TASKS,
    },
];

/// The last path segment of a model id or directory, without a trailing `/` or Ollama tag.
pub fn base_name(id: &str) -> &str {
    let id = id.trim().trim_end_matches('/');
    let last = id.rsplit('/').next().unwrap_or(id);
    last.split(':').next().unwrap_or(last)
}

/// The family `id` names (its last segment is the family's name), if any.
pub fn named(id: &str) -> Option<&'static Family> {
    let base = base_name(id);
    FAMILIES.iter().find(|f| f.name.eq_ignore_ascii_case(base))
}

/// The family and task of a member's id (`…/jina-embeddings-v5-text-nano-clustering`).
pub fn member(id: &str) -> Option<(&'static Family, &'static str)> {
    let base = base_name(id).to_ascii_lowercase();
    FAMILIES.iter().find_map(|f| {
        let task = base.strip_prefix(f.name)?.strip_prefix('-')?;
        f.tasks.iter().find(|t| **t == task).map(|t| (f, *t))
    })
}

/// The ids a configured id stands for: a family's members (the id with `-<task>` appended,
/// so hub ids and local directories both work), else the id itself.
pub fn expand(id: &str) -> Vec<String> {
    match named(id) {
        Some(family) => {
            let stem = id.trim().trim_end_matches('/');
            family
                .tasks
                .iter()
                .map(|task| format!("{stem}-{task}"))
                .collect()
        }
        None => vec![id.to_string()],
    }
}

/// Which member serves a request's `task` (or `input_type`), and the prompt role it asks of
/// that member (`query`, `document`): `None` when the task names nothing in the family.
pub fn route(family: &Family, task: &str) -> Option<(&'static str, Option<&'static str>)> {
    let task = task.trim().to_ascii_lowercase();
    if let Some(t) = family.tasks.iter().find(|t| **t == task) {
        return Some((t, None));
    }
    let role = match task.as_str() {
        "retrieval.query" | "query" | "search_query" => "query",
        "retrieval.passage" | "document" | "passage" | "search_document" => "document",
        _ => return None,
    };
    family
        .tasks
        .iter()
        .find(|t| **t == "retrieval")
        .map(|t| (*t, Some(role)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_id_expands_to_its_members_hub_or_directory() {
        assert_eq!(
            expand("jinaai/jina-embeddings-v5-text-small"),
            [
                "jinaai/jina-embeddings-v5-text-small-retrieval",
                "jinaai/jina-embeddings-v5-text-small-text-matching",
                "jinaai/jina-embeddings-v5-text-small-classification",
                "jinaai/jina-embeddings-v5-text-small-clustering",
            ]
        );
        assert_eq!(
            expand("/models/jina-embeddings-v5-text-nano/")[1],
            "/models/jina-embeddings-v5-text-nano-text-matching"
        );
        assert_eq!(
            expand("jinaai/jina-embeddings-v3"),
            ["jinaai/jina-embeddings-v3"]
        );
        // A member is served as itself.
        let m = "jinaai/jina-embeddings-v5-text-small-retrieval";
        assert_eq!(expand(m), [m]);
        assert_eq!(
            member(m).map(|(f, t)| (f.name, t)),
            Some((FAMILIES[0].name, "retrieval"))
        );
        assert_eq!(
            member("jina-embeddings-v5-text-nano-text-matching:latest")
                .unwrap()
                .1,
            "text-matching"
        );
        assert!(member("jinaai/jina-embeddings-v5-text-small-code").is_none());
    }

    #[test]
    fn tasks_and_input_types_route_to_a_member_and_a_prompt_role() {
        let f = &FAMILIES[1];
        assert_eq!(route(f, "clustering"), Some(("clustering", None)));
        assert_eq!(route(f, "Text-Matching"), Some(("text-matching", None)));
        assert_eq!(
            route(f, "retrieval.query"),
            Some(("retrieval", Some("query")))
        );
        assert_eq!(
            route(f, "search_document"),
            Some(("retrieval", Some("document")))
        );
        assert_eq!(route(f, "separation"), None);
    }
}

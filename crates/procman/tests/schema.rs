//! `procman schema` describes every example config in the repository and rejects what the
//! loader rejects by key or type.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::Node;
use serde_json::Value;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The schema as `procman schema` prints it.
fn validator() -> jsonschema::Validator {
    let sb = common::Sandbox::new("");
    let (status, out, err) = sb.run(&["schema"], Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{err}");
    let schema: Value = serde_json::from_str(&out).expect("the schema is JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    jsonschema::draft202012::meta::validate(&schema).expect("a valid draft 2020-12 schema");
    jsonschema::draft202012::new(&schema).expect("the schema compiles")
}

/// YAML as an editor's YAML 1.2 language server sees it (a later duplicate key wins).
fn to_json(node: &Node) -> Value {
    match node {
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
        Node::Sequence(s) => Value::Array(s.iter().map(to_json).collect()),
        Node::Scalar(s) if !s.may_coerce() => Value::String(s.as_str().to_owned()),
        Node::Scalar(s) => match s.as_str() {
            "" | "~" | "null" => Value::Null,
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            text => text
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| text.parse::<f64>().map(Value::from))
                .unwrap_or_else(|_| Value::String(text.to_owned())),
        },
    }
}

fn load(text: &str) -> Value {
    let options = marked_yaml::LoaderOptions::default().prevent_coercion(true);
    let node = marked_yaml::parse_yaml_with_options(0, text, options)
        .unwrap_or_else(|e| panic!("not YAML ({e}):\n{text}"));
    to_json(&node)
}

/// The ```yaml blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_with_extension(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// Every example config of the repository, named for messages.
fn examples() -> Vec<(String, String)> {
    let root = repository();
    let mut files = Vec::new();
    files_with_extension(&root.join("examples"), "yaml", &mut files);
    files_with_extension(
        &root.join("crates/procman/tests/fixtures"),
        "yaml",
        &mut files,
    );
    let mut examples: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.display().to_string(), std::fs::read_to_string(f).unwrap()))
        .collect();
    for doc in ["README.md", "docs/config.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for (i, block) in yaml_blocks(&text).into_iter().enumerate() {
            examples.push((format!("{doc}, yaml block {}", i + 1), block));
        }
    }
    examples
}

#[test]
fn every_example_config_in_the_repository_is_valid() {
    let validator = validator();
    let examples = examples();
    assert!(
        examples.len() >= 10,
        "too few examples found: {}",
        examples.len()
    );
    for (name, text) in examples {
        let errors: Vec<String> = validator
            .iter_errors(&load(&text))
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}:\n{}\n{text}", errors.join("\n"));
    }
}

#[test]
fn the_schema_rejects_what_the_loader_rejects_by_key_or_type() {
    let validator = validator();
    let rejected = [
        "web:\n  run: x\n  depnds: []\n",
        "web:\n  run: x\n  depends:\n    - tcp: a:1\n      code: 200\n",
        "web:\n  run: x\n  depends:\n    - bogus: 1\n",
        "web:\n  run: x\n  depends:\n    - output_matches: ready\n",
        "web:\n  env:\n    PORT: 1\n",
        "web:\n  run: x\n  replicas: 0\n",
        "web:\n  run: x\n  replicas: 2\n  for_each: {glob: a, as: F}\n",
        "web:\n  run: x\n  restart: sometimes\n",
        "web:\n  run: x\n  watch:\n    - check: {path: /x}\n      on_fail: explode\n",
        "procman:\n  run: x\n",
        "web:\n  run: x\n  env:\n    1BAD: x\n",
    ];
    for text in rejected {
        assert!(
            !validator.is_valid(&load(text)),
            "the schema accepts:\n{text}"
        );
    }
    let accepted = "web:\n  run: x\n  env_file: [a.env, b.env]\n  replicas: 2\n  restart: on-failure\n  stop_timeout: 5s\n  depends:\n    - output_matches: \"ready\"\n      process: db\n      timeout_seconds: 30\ndb:\n  run: y\n  env_file: .env.db\n";
    assert!(validator.is_valid(&load(accepted)));
}

//! procman 0.12's documented example configs run unchanged, in 0.12's start order.
//!
//! The commands they name (`db-migrate`, `serve`, `api-server`, …) are stand-in scripts on
//! PATH; the configs themselves are copied verbatim from 0.12's README and book.

mod common;

use std::time::Duration;

use common::Sandbox;

const T: Duration = Duration::from_secs(30);

/// README, "Dependency graph".
const README_DEPENDENCY_GRAPH: &str = r#"migrate:
  run: db-migrate up
  once: true

web:
  run: serve --port 3000

api:
  depends:
    - process_exited: migrate
    - url: http://localhost:3000/health
      code: 200
      timeout_seconds: 30
  run: api-server start
"#;

/// Book, getting-started.md, "A More Advanced Example".
const BOOK_ADVANCED: &str = r#"migrate:
  run: db-migrate up
  once: true

web:
  env:
    PORT: "3000"
  run: serve --port $PORT

api:
  depends:
    - process_exited: migrate
    - url: http://localhost:3000/health
      code: 200
      poll_interval: 0.5
      timeout_seconds: 30
  run: api-server start
"#;

/// Book, templates.md, "End-to-end example".
const BOOK_TEMPLATES: &str = r#"migrate:
  run: |
    ./run-migrations
    echo "DATABASE_URL=postgres://localhost:5432/mydb" > $PROCMAN_OUTPUT
  once: true

api:
  depends:
    - process_exited: migrate
  env:
    DB_URL: "${{ migrate.DATABASE_URL }}"
  run: ./start-api --db "${{ migrate.DATABASE_URL }}"
"#;

fn stand_ins(sb: &Sandbox) {
    sb.script(
        "db-migrate",
        "echo \"migrating $*\"; sleep 0.3; echo migrated",
    );
    sb.script(
        "serve",
        r#"exec python3 -u -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
print("serving", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()' "$@""#,
    );
    sb.script("api-server", "echo \"api $1\"; exec sleep 1000");
}

fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line containing {needle:?} in:\n{}", lines.join("\n")))
}

/// The order 0.12 guarantees: migrate and web at once; api only after migrate completed
/// and web answered its health check.
fn run_and_check_order(config: &str) {
    let sb = Sandbox::new(config);
    stand_ins(&sb);
    let mut cmd = sb.command(&[]);
    cmd.env("PATH", sb.path_env());
    let mut running = common::Running::start(cmd);
    running.wait_for("api | api start", T);
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(T).code(), Some(0));
    let lines = running.stdout_lines();
    let migrate = position(&lines, "migrate [");
    let web = position(&lines, "web [");
    let migrated = position(&lines, "migrate | migrated");
    let completed = position(&lines, "] completed");
    let health = position(&lines, "dependency satisfied: http://localhost:3000/health");
    let api = position(&lines, "api [");
    assert!(migrate < api && web < api, "{}", lines.join("\n"));
    assert!(
        migrated < completed && completed < api,
        "{}",
        lines.join("\n")
    );
    assert!(health < api, "{}", lines.join("\n"));
    // web is not gated: it started before migrate finished.
    assert!(web < completed, "{}", lines.join("\n"));
}

#[test]
fn readme_and_book_dependency_examples_keep_their_start_order() {
    // Both use port 3000, so they run one after the other in this one test.
    run_and_check_order(README_DEPENDENCY_GRAPH);
    run_and_check_order(BOOK_ADVANCED);
}

#[test]
fn book_template_example_passes_the_value() {
    let sb = Sandbox::new(BOOK_TEMPLATES);
    sb.script("run-migrations", "echo migrations done");
    std::fs::rename(sb.file("bin/run-migrations"), sb.file("run-migrations")).unwrap();
    sb.script("start-api", "echo \"api with $2 and env $DB_URL\"");
    std::fs::rename(sb.file("bin/start-api"), sb.file("start-api")).unwrap();
    let (status, out, err) = sb.run(&[], T);
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains(
            "api | api with postgres://localhost:5432/mydb and env postgres://localhost:5432/mydb"
        ),
        "{out}"
    );
}

#[test]
fn readme_format_example_reports_its_duplicate_key() {
    // The README's big format example defines `web` twice. 0.12 silently drops one of
    // them; we refuse with the position of the second.
    let config = include_str!("fixtures/readme_format_example.yaml");
    let sb = Sandbox::new(config);
    let (status, _, err) = sb.run(&["check"], T);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("procman.yaml:47:1: error: duplicate process `web`"),
        "{err}"
    );
}

//! The loader's first stage for a Procfile (foreman, honcho, overmind): `name: command`
//! lines, each a long-running process with every default. Blank lines and `#` comments are
//! skipped; any other line must be `name: command`, where a name is letters, digits, `_`
//! and `-`, as foreman requires.

use std::collections::HashMap;

use super::draft::{Ctx, Draft};
use super::model::{Location, ProcessSpec};
use super::parse::process_name;

/// The processes of Procfile `text` in file order, and their names.
pub(super) fn parse(text: &str, cx: &mut Ctx) -> (Vec<Draft>, Vec<String>) {
    let mut drafts = Vec::new();
    let mut first: HashMap<String, Location> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let at = |offset: usize| Location {
            line: i + 1,
            column: line[..offset].chars().count() + 1,
        };
        let name_at = at(line.len() - body.len());
        let Some((name, command)) = body.split_once(':') else {
            cx.err(
                name_at,
                format!(
                    "expected `name: command`, got `{}`; a Procfile line names a process, a colon, then its command (`#` starts a comment)",
                    body.trim_end()
                ),
            );
            continue;
        };
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            cx.err(
                name_at,
                format!(
                    "`{name}` is not a Procfile process name: use letters, digits, `_` and `-`, then a colon and the command"
                ),
            );
            continue;
        }
        let Some(valid_name) = process_name(cx, name, name_at) else {
            continue;
        };
        let lead = command.len() - command.trim_start().len();
        let command_at = at(line.len() - body.len() + name.len() + 1 + lead);
        let command = command.trim();
        if command.is_empty() {
            cx.err(
                name_at,
                format!("process `{name}` has no command; write `{name}: COMMAND`"),
            );
            continue;
        }
        if let Some(prev) = first.get(name) {
            cx.err(
                name_at,
                format!(
                    "duplicate process `{name}` (first defined at line {}:{}); rename one of them",
                    prev.line, prev.column
                ),
            );
            continue;
        }
        first.insert(name.to_owned(), name_at);
        let spec = ProcessSpec::with_defaults(valid_name, command.to_owned(), name_at);
        let mut draft = Draft::of(spec);
        cx.collect_templates(
            command,
            command_at,
            &format!("process `{name}`"),
            &mut draft.templates,
        );
        drafts.push(draft);
    }
    let names = first.into_keys().collect();
    (drafts, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreman_style_lines() {
        let mut cx = Ctx::default();
        let text = "# a comment\n\nweb: bundle exec rails s -p $PORT\r\nworker:   ./work --queue=a:b  \n  clock: ./clock\n";
        let (drafts, _) = parse(text, &mut cx);
        assert!(cx.diags.is_empty(), "{:?}", cx.diags);
        let got: Vec<(&str, &str, usize)> = drafts
            .iter()
            .map(|d| {
                (
                    d.spec.name.as_str(),
                    d.spec.run.as_str(),
                    d.spec.location.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("web", "bundle exec rails s -p $PORT", 3),
                ("worker", "./work --queue=a:b", 4),
                ("clock", "./clock", 5)
            ]
        );
        assert!(drafts.iter().all(|d| !d.spec.once && d.spec.autostart));
        assert_eq!(drafts[2].spec.location.column, 3);
    }

    #[test]
    fn bad_lines_are_located() {
        let mut cx = Ctx::default();
        let text = "web: ok\njust a command\nbad name: x\nempty:\nweb: again\nprocman: x\n";
        let (drafts, _) = parse(text, &mut cx);
        assert_eq!(drafts.len(), 1);
        let got: Vec<(usize, usize)> = cx.diags.iter().map(|d| (d.line, d.column)).collect();
        assert_eq!(
            got,
            [(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)],
            "{:?}",
            cx.diags
        );
        assert!(cx.diags[0].message.contains("expected `name: command`"));
        assert!(cx.diags[1].message.contains("not a Procfile process name"));
        assert!(cx.diags[2].message.contains("has no command"));
        assert!(cx.diags[3].message.contains("duplicate process `web`"));
        assert!(cx.diags[4].message.contains("reserved"));
    }
}

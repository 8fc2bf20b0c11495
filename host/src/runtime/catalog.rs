//! What to tell a user who asked for a command no loaded plugin serves: the closest
//! command that exists, or which plugins are loaded.
//!
//! Pure text work over the names of the loaded plugins; it must not look at the
//! registry or wasmtime, so it is tested exactly.

/// The hint appended to `no plugin serves "..."`: starts with `": "`, such as
/// `: did you mean "github.commits"? (plugins: echo, github)`.
///
/// `plugins` yields each loaded plugin's name and its commands (without the prefix);
/// `skipped` is why the plugin the command names failed to load, if it did.
pub(super) fn hint<'a>(
    command: &str,
    plugins: impl Iterator<Item = (&'a str, &'a [String])>,
    skipped: Option<&str>,
) -> String {
    let mut plugins: Vec<(&str, &[String])> = plugins.collect();
    plugins.sort_by_key(|(name, _)| *name);
    let names: Vec<&str> = plugins.iter().map(|(name, _)| *name).collect();
    let loaded = if names.is_empty() {
        "(no plugins are loaded)".to_owned()
    } else {
        format!("(plugins: {})", names.join(", "))
    };

    let plugin = command
        .split_once('.')
        .map_or(command, |(plugin, _)| plugin);
    if let Some(reason) = skipped {
        return format!(": plugin {plugin:?} is not loaded: {reason}");
    }

    let candidates = plugins.iter().flat_map(|(plugin, commands)| {
        commands
            .iter()
            .map(move |command| format!("{plugin}.{command}"))
    });
    if let Some(closest) = closest(command, candidates) {
        return format!(": did you mean {closest:?}? {loaded}");
    }

    let plugin = command
        .split_once('.')
        .map_or(command, |(plugin, _)| plugin);
    match plugins.iter().find(|(name, _)| *name == plugin) {
        Some((name, commands)) => {
            let mut served: Vec<String> = commands.iter().map(|c| format!("{name}.{c}")).collect();
            served.sort();
            format!(": plugin {name:?} serves {}", served.join(", "))
        }
        None => format!(": plugin {plugin:?} is not loaded {loaded}"),
    }
}

/// The candidate nearest to `wanted` by edit distance, if it is near enough to be a
/// typo: at most a third of the length, and at least one edit allowed.
fn closest(wanted: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    let allowed = (wanted.chars().count() / 3).max(1);
    candidates
        .map(|candidate| (edit_distance(wanted, &candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over characters, ignoring ASCII case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str, expected: &str) {
        let github = vec!["issues".to_owned(), "commits".to_owned()];
        let echo = vec!["echo".to_owned(), "config".to_owned()];
        let plugins = [("github", github.as_slice()), ("echo", echo.as_slice())];
        assert_eq!(
            hint(command, plugins.into_iter(), None),
            expected,
            "{command}"
        );
    }

    #[test]
    fn hints_name_the_closest_command_or_what_is_loaded() {
        check(
            "github.comits",
            r#": did you mean "github.commits"? (plugins: echo, github)"#,
        );
        check(
            "githib.commits",
            r#": did you mean "github.commits"? (plugins: echo, github)"#,
        );
        check(
            "Echo.Echo",
            r#": did you mean "echo.echo"? (plugins: echo, github)"#,
        );
        check(
            "jira.issue",
            r#": plugin "jira" is not loaded (plugins: echo, github)"#,
        );
        check(
            "github.pulls",
            r#": plugin "github" serves github.commits, github.issues"#,
        );
    }

    #[test]
    fn an_empty_catalog_says_so() {
        assert_eq!(
            hint("echo.echo", std::iter::empty(), None),
            r#": plugin "echo" is not loaded (no plugins are loaded)"#
        );
    }

    #[test]
    fn a_skipped_plugin_says_why() {
        assert_eq!(
            hint(
                "github.commits",
                std::iter::empty(),
                Some("secret GITHUB_TOKEN is not set")
            ),
            r#": plugin "github" is not loaded: secret GITHUB_TOKEN is not set"#
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("commits", "commits"), 0);
        assert_eq!(edit_distance("comits", "commits"), 1);
        assert_eq!(edit_distance("commtis", "commits"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}

//! `<data dir>/config.toml`: the flags of `dfs node` from a file, each by its long name. The
//! command line wins over `DFS_*` variables, which win over the file, which wins over the
//! defaults.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::api::client::default_data_dir;
use crate::datadir::DataDir;

use super::{usage_error, Cli};

/// File name of the node's configuration in its data dir.
pub const CONFIG_FILE: &str = "config.toml";

/// Parses `args` (the whole command line, program name first). For `dfs node`, the flags that
/// neither the command line nor a `DFS_*` variable set are taken from the data dir's
/// `config.toml`, if there is one. On an error, prints it and returns the exit code.
pub(super) fn parse(args: Vec<OsString>) -> Result<Cli, u8> {
    let matches = Cli::command()
        .try_get_matches_from(&args)
        .map_err(usage_error)?;
    let Some(("node", node)) = matches.subcommand() else {
        return Cli::from_arg_matches(&matches).map_err(usage_error);
    };
    let dir = node
        .get_one::<PathBuf>("data_dir")
        .cloned()
        .unwrap_or_else(default_data_dir);
    let path = DataDir::new(dir).path().join(CONFIG_FILE);
    let extra = match from_file(&path, node) {
        Ok(extra) => extra,
        Err(message) => {
            eprintln!("error: {}: {message}", path.display());
            return Err(2);
        }
    };
    if extra.is_empty() {
        return Cli::from_arg_matches(&matches).map_err(usage_error);
    }
    let mut all = args;
    all.extend(extra);
    match Cli::command().try_get_matches_from(&all) {
        Ok(m) => Cli::from_arg_matches(&m).map_err(usage_error),
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid value");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("error: {}: {first}", path.display());
            Err(2)
        }
    }
}

/// The command-line arguments that `path` adds: one `--name=value` per value of each key
/// whose flag was not given on the command line or by a variable. A missing file adds none.
fn from_file(path: &Path, node: &ArgMatches) -> Result<Vec<OsString>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        // No file, or no data dir yet (the node says what is wrong with it).
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start].matches('\n').count() + 1;
                format!("line {line}: {msg}")
            }
            None => msg,
        }
    })?;
    args_of(&table, node)
}

/// See [`from_file`]: the arguments of a parsed configuration.
fn args_of(table: &toml::Table, node: &ArgMatches) -> Result<Vec<OsString>, String> {
    let command = Cli::command();
    let flags = command
        .find_subcommand("node")
        .expect("the node subcommand")
        .get_arguments()
        .filter(|a| a.get_long().is_some_and(|l| l != "data-dir" && l != "help"))
        .cloned()
        .collect::<Vec<_>>();
    let mut out = Vec::new();
    for (key, value) in table {
        let Some(arg) = flags.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            if key == "data-dir" {
                return Err("data-dir cannot be set in the data dir's own config.toml".into());
            }
            let known: Vec<&str> = flags
                .iter()
                .filter(|a| !a.is_hide_set())
                .filter_map(|a| a.get_long())
                .collect();
            return Err(format!(
                "unknown key {key:?} (known keys: {})",
                known.join(", ")
            ));
        };
        if matches!(
            node.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_num_args().is_none_or(|n| n.takes_values())
            && !matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse | clap::ArgAction::Count
            );
        let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
        let values = match value {
            toml::Value::Array(items) if repeatable => items.iter().collect(),
            toml::Value::Array(_) => return Err(format!("{key} takes one value, not a list")),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(n) => n.to_string(),
                toml::Value::Boolean(b) if !takes_value => {
                    if *b {
                        out.push(OsString::from(format!("--{key}")));
                    }
                    continue;
                }
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "{key}: a {} is not a value of this flag",
                        other.type_str()
                    ))
                }
            };
            if !takes_value {
                return Err(format!("{key} is a switch: write {key} = true"));
            }
            out.push(OsString::from(format!("--{key}={text}")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_matches(args: &[&str]) -> ArgMatches {
        let mut all = vec!["dfs", "node"];
        all.extend(args);
        let m = Cli::command().try_get_matches_from(all).unwrap();
        m.subcommand_matches("node").unwrap().clone()
    }

    fn args(toml: &str, cli: &[&str]) -> Result<Vec<String>, String> {
        let table: toml::Table = toml::from_str(toml).unwrap();
        Ok(args_of(&table, &node_matches(cli))?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn every_kind_of_value_becomes_a_flag() {
        let got = args(
            r#"
            listen = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"]
            api = "127.0.0.1:5009"
            api-allow-remote = true
            scrub-interval = "1h"
            scrub-rate = 1000
            "#,
            &[],
        )
        .unwrap();
        assert!(got.contains(&"--listen=/ip4/127.0.0.1/tcp/1".to_string()));
        assert!(got.contains(&"--listen=/ip4/127.0.0.1/tcp/2".to_string()));
        assert!(got.contains(&"--api=127.0.0.1:5009".to_string()));
        assert!(got.contains(&"--api-allow-remote".to_string()));
        assert!(got.contains(&"--scrub-interval=1h".to_string()));
        assert!(got.contains(&"--scrub-rate=1000".to_string()));
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let got = args(r#"api = "127.0.0.1:5009""#, &["--api", "127.0.0.1:1"]).unwrap();
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn unknown_keys_and_wrong_shapes_are_errors() {
        let e = args("nonsense = 1", &[]).unwrap_err();
        assert!(e.contains("unknown key \"nonsense\""), "{e}");
        let e = args(r#"api = ["a", "b"]"#, &[]).unwrap_err();
        assert!(e.contains("one value"), "{e}");
        let e = args(r#"data-dir = "/x""#, &[]).unwrap_err();
        assert!(e.contains("data-dir"), "{e}");
    }
}

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
/// File name of the addresses `dfs node` last ran with, in its data dir: a restart with only
/// `--data-dir` listens where the last run did. Written by the node; flags, `DFS_*` variables
/// and `config.toml` win over it.
pub const ADDRESSES_FILE: &str = "addresses.toml";
/// The flags [`ADDRESSES_FILE`] may hold.
const REMEMBERED: [&str; 2] = ["listen", "api"];

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
    let data_dir = DataDir::new(dir);
    let path = data_dir.path().join(CONFIG_FILE);
    let extra = match from_file(&path, node, None) {
        Ok(extra) => extra,
        Err(message) => {
            eprintln!("error: {}: {message}", path.display());
            return Err(2);
        }
    };
    let mut all = args;
    all.extend(extra);
    let given = Cli::command()
        .try_get_matches_from(&all)
        .map_err(|e| in_file(&path, e))?;
    // Then the addresses of the last run, for the flags nothing above set.
    let remembered = data_dir.path().join(ADDRESSES_FILE);
    let given = given
        .subcommand_matches("node")
        .expect("the node subcommand");
    let extra = match from_file(&remembered, given, Some(&REMEMBERED)) {
        Ok(extra) => extra,
        Err(message) => {
            eprintln!("error: {}: {message}", remembered.display());
            eprintln!(
                "(it holds the addresses of the last run: remove it to start from the defaults)"
            );
            return Err(2);
        }
    };
    all.extend(extra);
    let m = Cli::command()
        .try_get_matches_from(&all)
        .map_err(|e| in_file(&remembered, e))?;
    Cli::from_arg_matches(&m).map_err(usage_error)
}

/// Prints the first line of a parse error caused by a value from the file at `path`.
fn in_file(path: &Path, e: clap::Error) -> u8 {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid value");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("error: {}: {first}", path.display());
    2
}

/// Writes [`ADDRESSES_FILE`]: the listen addresses (none: the default) and API address this
/// run uses, for the next start of the same data dir. Not those `config.toml` sets (the file
/// stays the one place they are kept), nor an API address off loopback (a start without
/// `--api-allow-remote` would refuse it).
pub(super) fn remember(
    data_dir: &DataDir,
    listen: &[libp2p::Multiaddr],
    api: std::net::SocketAddr,
) -> std::io::Result<()> {
    let configured: toml::Table = std::fs::read_to_string(data_dir.path().join(CONFIG_FILE))
        .ok()
        .and_then(|text| toml::from_str(&text).ok())
        .unwrap_or_default();
    let mut table = toml::Table::new();
    if !listen.is_empty() && !configured.contains_key("listen") {
        let addrs = listen.iter().map(|a| toml::Value::String(a.to_string()));
        table.insert("listen".into(), toml::Value::Array(addrs.collect()));
    }
    if api.ip().is_loopback() && !configured.contains_key("api") {
        table.insert("api".into(), toml::Value::String(api.to_string()));
    }
    let text = format!(
        "# Written by `dfs node`: the addresses of its last run, used when no flag, DFS_* variable\n\
         # or config.toml sets them. Remove this file to start from the defaults.\n{}",
        toml::to_string(&table).map_err(std::io::Error::other)?
    );
    crate::datadir::atomic_write(
        &data_dir.path().join(ADDRESSES_FILE),
        text.as_bytes(),
        false,
    )
}

/// The command-line arguments that `path` adds: one `--name=value` per value of each key
/// whose flag was not given on the command line or by a variable. A missing file adds none.
fn from_file(
    path: &Path,
    node: &ArgMatches,
    only: Option<&[&str]>,
) -> Result<Vec<OsString>, String> {
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
    if let Some(key) = only.and_then(|only| table.keys().find(|k| !only.contains(&k.as_str()))) {
        return Err(format!(
            "unknown key {key:?} (known keys: {})",
            only.unwrap_or_default().join(", ")
        ));
    }
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
    fn remembered_addresses_leave_out_config_toml_and_remote_apis() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path());
        let listen: Vec<libp2p::Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4101".parse().unwrap()];
        let read = || std::fs::read_to_string(dir.path().join(ADDRESSES_FILE)).unwrap();
        remember(&data, &listen, "127.0.0.1:5101".parse().unwrap()).unwrap();
        assert!(read().contains("/tcp/4101") && read().contains("127.0.0.1:5101"));
        remember(&data, &listen, "0.0.0.0:5101".parse().unwrap()).unwrap();
        assert!(!read().contains("5101\""), "{}", read());
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            "listen = [\"/ip4/0.0.0.0/tcp/1\"]\n",
        )
        .unwrap();
        remember(&data, &listen, "127.0.0.1:5101".parse().unwrap()).unwrap();
        assert!(
            !read().contains("4101") && read().contains("127.0.0.1:5101"),
            "{}",
            read()
        );
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

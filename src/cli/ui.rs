//! `dfs ui`: the address of the node's web page, with the API token in its fragment.

use crate::api::client::ApiClient;

use super::{output, Error, Result};

/// `dfs ui [--json] [--open]`: checks that the node answers and accepts the token, then prints
/// `<api url>/ui#token=<token>` (the fragment never reaches the server, nor its logs); with
/// `--open`, also hands it to `$BROWSER` or `xdg-open` when one is there.
pub(super) async fn ui(api: &ApiClient, json: bool, open: bool) -> Result<()> {
    let token = api.token().ok_or_else(|| {
        Error::Usage(
            "no API token: give --token, or --data-dir of the node (its api-token file)".into(),
        )
    })?;
    api.id().await?;
    let url = format!(
        "{}{}#token={token}",
        browsable(api.url()),
        crate::api::ui::PATH
    );
    if json {
        output::json(&serde_json::json!({ "url": url }))?;
    } else {
        println!("{url}");
        eprintln!(
            "open this address in a browser on this machine; it holds the API token: keep it as secret as the token"
        );
    }
    if open {
        match browser(&url) {
            Some(program) => eprintln!("opened with {program}"),
            None => eprintln!("no browser found ($BROWSER, xdg-open): open the address by hand"),
        }
    }
    Ok(())
}

/// The API's URL as a browser can open it: a node listening on every address (`0.0.0.0`, `::`,
/// with `--api-allow-remote`) is reached on loopback.
fn browsable(url: &str) -> String {
    url.replacen("://0.0.0.0:", "://127.0.0.1:", 1)
        .replacen("://[::]:", "://[::1]:", 1)
}

/// Starts `$BROWSER` (its first entry; `%s` stands for the URL) or `xdg-open` on `url`, without
/// waiting; the program's name, or `None` if none could start.
fn browser(url: &str) -> Option<String> {
    let from_env = std::env::var("BROWSER")
        .ok()
        .and_then(|b| b.split(':').next().map(str::to_string))
        .filter(|b| !b.trim().is_empty());
    let candidates = from_env
        .into_iter()
        .chain(std::iter::once("xdg-open".to_string()));
    for command in candidates {
        let mut words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            continue;
        }
        if words.iter().any(|w| w.contains("%s")) {
            for w in &mut words {
                *w = w.replace("%s", url);
            }
        } else {
            words.push(url.to_string());
        }
        let started = std::process::Command::new(&words[0])
            .args(&words[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Ok(child) = started {
            if !failed_at_once(child) {
                return Some(words[0].clone());
            }
        }
    }
    None
}

/// How long a browser launcher may take to say it failed (xdg-open exits once the browser is
/// started; a browser itself keeps running).
const LAUNCH_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// True when `child` exits unsuccessfully within [`LAUNCH_GRACE`] (say, xdg-open without any
/// browser); one still running then is taken to be the browser, and left running.
fn failed_at_once(mut child: std::process::Child) -> bool {
    let until = std::time::Instant::now() + LAUNCH_GRACE;
    while std::time::Instant::now() < until {
        match child.try_wait() {
            Ok(Some(status)) => return !status.success(),
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_on_every_address_is_opened_on_loopback() {
        assert_eq!(
            super::browsable("http://0.0.0.0:5001"),
            "http://127.0.0.1:5001"
        );
        assert_eq!(super::browsable("http://[::]:5001"), "http://[::1]:5001");
        assert_eq!(
            super::browsable("http://127.0.0.1:5001"),
            "http://127.0.0.1:5001"
        );
        assert_eq!(
            super::browsable("http://192.168.1.5:5001"),
            "http://192.168.1.5:5001"
        );
    }
}

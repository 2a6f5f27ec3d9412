//! Directories: `dfs put -r DIR` stores each regular file under `PREFIX/<relative path>`, and
//! `dfs get -r PREFIX -o DIR` writes the keys under `PREFIX/` back as files, refusing any key
//! that would land outside `DIR`.

use std::io::IsTerminal;
use std::path::{Component, Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::api::client::ApiClient;
use crate::record::printable;

use super::files::put_one;
use super::transfer::save;
use super::{output, Error, Result};

/// `dfs put -r DIR [--prefix P] [--json]`.
pub(super) async fn put(
    api: &ApiClient,
    dir: &str,
    prefix: Option<String>,
    json: bool,
) -> Result<()> {
    let root = Path::new(dir);
    if !root.is_dir() {
        return Err(Error::Usage(format!(
            "{dir} is not a directory (put -r takes one)"
        )));
    }
    let prefix = match prefix {
        Some(p) => p.trim_end_matches('/').to_string(),
        None => std::path::absolute(root)
            .ok()
            .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "cannot make a prefix of {dir}; give one with --prefix"
                ))
            })?,
    };
    let mut files = Vec::new();
    walk(root, Path::new(""), &mut files)?;
    files.sort();
    let bar = count_bar(files.len() as u64, "put");
    let (mut stored, mut failed) = (Vec::new(), 0usize);
    for rel in &files {
        let Some(rel_key) = key_part(rel) else {
            bar.suspend(|| eprintln!("skipping {}: its name is not UTF-8", rel.display()));
            failed += 1;
            continue;
        };
        let key = if prefix.is_empty() {
            rel_key
        } else {
            format!("{prefix}/{rel_key}")
        };
        let path = root.join(rel);
        bar.set_message(printable(&key).into_owned());
        match put_one(api, &path.to_string_lossy(), Some(key.clone()), false).await {
            Ok(stat) => {
                if !json {
                    bar.suspend(|| output::stored(&stat));
                }
                stored.push(stat);
            }
            Err(e @ Error::Api(_)) if e.exit_code() == 2 => return Err(e),
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {}: {e}", printable(&key)));
                failed += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        output::json(&stored)?;
    }
    summary(stored.len(), failed)
}

/// `dfs get -r PREFIX -o DIR [--json]`.
pub(super) async fn get(api: &ApiClient, prefix: &str, dir: &Path, json: bool) -> Result<()> {
    let prefix = prefix.trim_end_matches('/');
    let list_prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let files = api.list(Some(&list_prefix)).await?;
    let files: Vec<_> = files.into_iter().filter(|f| !f.deleted).collect();
    if files.is_empty() {
        return Err(Error::Failed(format!("no keys under {list_prefix:?}")));
    }
    let existed = dir.exists();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let bar = count_bar(files.len() as u64, "get");
    let (mut fetched, mut failed) = (Vec::new(), 0usize);
    for f in &files {
        let rest = &f.key[list_prefix.len()..];
        let rel = match safe_relative(rest) {
            Ok(rel) => rel,
            Err(why) => {
                bar.suspend(|| {
                    eprintln!(
                        "error: refusing key {:?}: it would be written outside {} ({why})",
                        f.key,
                        dir.display()
                    )
                });
                failed += 1;
                continue;
            }
        };
        let path = dir.join(rel);
        bar.set_message(printable(&f.key).into_owned());
        let result = match path.parent() {
            Some(parent) => std::fs::create_dir_all(parent)
                .map_err(|e| Error::Failed(format!("cannot create {}: {e}", parent.display()))),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => save(api, &f.key, &path, false).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(done) => fetched.push(done),
            Err(e @ Error::Interrupted(_)) => return Err(e),
            Err(e @ Error::Api(_)) if e.exit_code() == 2 => return Err(e),
            Err(e) => {
                bar.suspend(|| eprintln!("error: {}: {e}", printable(&f.key)));
                failed += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !existed {
        // Directories made for files that were never written are not left behind (a partial
        // file kept for a resume keeps its own).
        remove_empty_dirs(dir);
    }
    if json {
        output::json(&fetched)?;
    } else if fetched.is_empty() {
        println!("wrote no file under {}", dir.display());
    } else {
        println!("wrote {} file(s) under {}", fetched.len(), dir.display());
    }
    summary(fetched.len(), failed)
}

/// Removes `dir` and the directories under it that hold no file (nothing else is touched).
fn remove_empty_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Exit 1 when any file failed, after the others were done.
fn summary(done: usize, failed: usize) -> Result<()> {
    if failed == 0 {
        Ok(())
    } else {
        Err(Error::Failed(format!(
            "{failed} of {} file(s) failed (see above)",
            done + failed
        )))
    }
}

/// A bar counting files, on a terminal only.
fn count_bar(n: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(n).with_style(
        ProgressStyle::with_template(&format!("{what} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"))
            .expect("valid template")
            .progress_chars("=> "),
    )
}

/// Collects the regular files under `root/rel`, as paths relative to `root`. Symbolic links
/// are skipped with a note (following them could leave the tree or loop).
fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let cannot = |e: std::io::Error| Error::Failed(format!("cannot read {}: {e}", dir.display()));
    for entry in std::fs::read_dir(&dir).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        let kind = entry.file_type().map_err(cannot)?;
        let path = rel.join(entry.file_name());
        if kind.is_symlink() {
            eprintln!(
                "note: skipping symbolic link {}",
                root.join(&path).display()
            );
        } else if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push(path);
        } else {
            eprintln!(
                "note: skipping {} (not a regular file)",
                root.join(&path).display()
            );
        }
    }
    Ok(())
}

/// A relative path as the part of a key: its components joined with `/`.
fn key_part(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

/// The path under the target directory for the rest of a key after the prefix, or why it
/// would not stay under it: empty, absolute, `.` or `..` segments, empty segments, backslashes
/// or NUL.
fn safe_relative(rest: &str) -> std::result::Result<PathBuf, &'static str> {
    if rest.is_empty() {
        return Err("nothing after the prefix");
    }
    if rest.starts_with('/') {
        return Err("an absolute path");
    }
    if rest.contains('\\') || rest.contains('\0') {
        return Err("a backslash or NUL in the key");
    }
    let mut path = PathBuf::new();
    for segment in rest.split('/') {
        match segment {
            "" => return Err("an empty path segment"),
            "." | ".." => return Err("a . or .. segment"),
            s => path.push(s),
        }
    }
    // Belt and braces: nothing but plain names.
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("not a plain relative path");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_escape_the_directory_are_refused() {
        assert_eq!(safe_relative("a/b.txt").unwrap(), Path::new("a/b.txt"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a\\..\\b",
            "..",
            "C:\\x",
        ] {
            assert!(safe_relative(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn directories_left_empty_are_removed_and_files_kept() {
        let base = tempfile::tempdir().unwrap();
        let out = base.path().join("out");
        std::fs::create_dir_all(out.join("a/b/c")).unwrap();
        std::fs::create_dir_all(out.join("d")).unwrap();
        remove_empty_dirs(&out);
        assert!(!out.exists(), "nothing was written: no directory left");
        std::fs::create_dir_all(out.join("a/b")).unwrap();
        std::fs::create_dir_all(out.join("e")).unwrap();
        std::fs::write(out.join("a/b/partial"), b"kept").unwrap();
        remove_empty_dirs(&out);
        assert!(out.join("a/b/partial").exists());
        assert!(!out.join("e").exists());
    }

    #[test]
    fn walking_finds_regular_files_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top"), b"1").unwrap();
        std::fs::write(dir.path().join("a/b/deep"), b"2").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let mut found = Vec::new();
        walk(dir.path(), Path::new(""), &mut found).unwrap();
        found.sort();
        assert_eq!(found, [PathBuf::from("a/b/deep"), PathBuf::from("top")]);
        assert_eq!(key_part(Path::new("a/b/deep")).unwrap(), "a/b/deep");
    }
}

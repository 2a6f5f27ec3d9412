//! The `dfs` binary: parses the command line, runs it with [`dfs::cli::run`], and maps the
//! outcome to an exit code (0 success, 1 operation failed, 2 usage or connection error, 130
//! interrupted).

use std::process::ExitCode;

use dfs::cli;

fn main() -> ExitCode {
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

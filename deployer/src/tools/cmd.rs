//! Running the tools the deployer drives (cargo, rustup, pip, python): one way to start them
//! and one shape of error when they fail.

use std::process::Command;

/// `cargo`, the one running us when there is one (`$CARGO`), else the one on `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` to the end with its output captured: its stdout on success, otherwise what it
/// was, how it ended and its stderr.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?} exited with {}: {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` to the end with its output going where ours goes (for long work whose own
/// progress a person should see); an error says what it was and how it ended.
pub fn status(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{:?} exited with {status}", cmd.get_program()))
    }
}

/// Reads `stream` to its end on a thread of its own (so a child writing to a full pipe never
/// blocks), giving back what it read; an absent stream reads as empty.
pub fn collect<R: std::io::Read + Send + 'static>(
    stream: Option<R>,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stream {
            let _ = s.read_to_string(&mut text);
        }
        text
    })
}

/// The last `n` lines of `text` (a failed tool's messages end with what matters).
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn collect_reads_to_the_end() {
        let text = collect(Some(std::io::Cursor::new(b"one\ntwo".to_vec())));
        assert_eq!(text.join().unwrap(), "one\ntwo");
        let none: Option<std::io::Cursor<Vec<u8>>> = None;
        assert_eq!(collect(none).join().unwrap(), "");
    }

    #[test]
    fn failures_say_what_ran_and_how_it_ended() {
        let e = output(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).unwrap_err();
        assert!(
            e.contains("\"sh\"") && e.contains("3") && e.contains("oops"),
            "{e}"
        );
        assert_eq!(
            output(Command::new("sh").args(["-c", "echo hi"]))
                .ok()
                .as_deref(),
            Some("hi\n")
        );
        let e = status(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(e.starts_with("cannot start"), "{e}");
    }
}

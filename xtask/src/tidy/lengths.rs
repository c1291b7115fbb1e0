//! No function in the workspace is over [`MAX_LINES`] lines, tests included: a longer one is
//! a list of phases that wants names.

use super::{read, workspace_sources};

pub const MAX_LINES: usize = 100;

/// The tokens the length check needs: braces, parentheses, semicolons and `fn NAME`, each
/// with its byte offset; comments, strings and character literals are skipped.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Punct(u8, usize),
    Fn(&'a str, usize),
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The end of a raw string starting at `i` (`r"…"`, `br#"…"#`), or `None` if none starts there.
fn raw_string_end(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut j = i + usize::from(b[i] == b'b');
    if b.get(j) != Some(&b'r') || (i > 0 && is_ident(b[i - 1])) {
        return None;
    }
    j += 1;
    let hashes = b[j..].iter().take_while(|c| **c == b'#').count();
    if b.get(j + hashes) != Some(&b'"') {
        return None;
    }
    let close = format!("\"{}", "#".repeat(hashes));
    let from = j + hashes + 1;
    Some(
        text[from..]
            .find(&close)
            .map_or(text.len(), |k| from + k + close.len()),
    )
}

/// The end of a character literal at `i`, or `None` for a lifetime.
fn char_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i + 1) == Some(&b'\\') {
        let close = b[i + 2..].iter().position(|c| *c == b'\'')?;
        return Some(i + 2 + close + 1);
    }
    let ch = std::str::from_utf8(&b[i + 1..]).ok()?.chars().next()?;
    let after = i + 1 + ch.len_utf8();
    (b.get(after) == Some(&b'\'')).then_some(after + 1)
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let b = text.as_bytes();
    let (mut i, mut out) = (0, Vec::new());
    while i < b.len() {
        // Bytes, not `str`: `i` steps through multi-byte characters.
        let rest = &b[i..];
        if let Some(comment) = rest.strip_prefix(b"//") {
            i = comment
                .iter()
                .position(|c| *c == b'\n')
                .map_or(b.len(), |k| i + 2 + k);
        } else if let Some(comment) = rest.strip_prefix(b"/*") {
            i = comment
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(b.len(), |k| i + 2 + k + 2);
        } else if let Some(end) = raw_string_end(text, i) {
            i = end;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == b'\'' {
            i = char_end(b, i).unwrap_or(i + 1);
        } else if b"{}();".contains(&b[i]) {
            out.push(Token::Punct(b[i], i));
            i += 1;
        } else if rest.starts_with(b"fn ") && (i == 0 || !is_ident(b[i - 1])) {
            let name_start = i + 3;
            let len = b[name_start..].iter().take_while(|c| is_ident(**c)).count();
            out.push(Token::Fn(&text[name_start..name_start + len], i));
            i = name_start + len;
        } else {
            i += 1;
        }
    }
    out
}

/// Each function of `text` with a body: its name, first line and number of lines.
pub fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let toks = tokens(text);
    let line = |at: usize| text[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (k, t) in toks.iter().enumerate() {
        let Token::Fn(name, at) = t else { continue };
        let (mut parens, mut body) = (0i32, None);
        for (j, u) in toks.iter().enumerate().skip(k + 1) {
            match u {
                Token::Punct(b'(', _) => parens += 1,
                Token::Punct(b')', _) => parens -= 1,
                Token::Punct(b'{', _) if parens == 0 => {
                    body = Some(j);
                    break;
                }
                Token::Punct(b';', _) if parens == 0 => break,
                _ => {}
            }
        }
        let Some(open) = body else { continue };
        let mut depth = 0;
        for u in &toks[open..] {
            match u {
                Token::Punct(b'{', _) => depth += 1,
                Token::Punct(b'}', end) => {
                    depth -= 1;
                    if depth == 0 {
                        out.push((name.to_string(), line(*at), line(*end) - line(*at) + 1));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_the_limit() {
    let mut long = Vec::new();
    for f in workspace_sources() {
        for (name, at, lines) in functions(&read(&f)) {
            if lines > MAX_LINES {
                long.push(format!("{}:{at}: {name} is {lines} lines", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn lengths_are_measured_past_strings_and_comments() {
    let text = "fn a() {\n    let s = \"}\"; // }\n    let r = r#\"{\"#;\n    let c = '{';\n    let l: &'static str = \"\";\n}\nfn b();\nfn c<'a>(x: &'a str) -> &'a str { x }\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 6), ("c".to_string(), 8, 1)]
    );
}

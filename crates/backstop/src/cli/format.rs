//! How results look to a person: kubectl-like tables and ages.

use jiff::{SignedDuration, Timestamp};

/// kubectl's way of writing an age: `42s`, `3m20s` below ten minutes, `5h` or `3h12m` below a
/// day's hours, `4d` beyond.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let seconds = now.duration_since(since).as_secs().max(0);
    let (m, h, d) = (seconds / 60, seconds / 3600, seconds / 86400);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{m}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{m}m"),
        s if s < 8 * 3600 => format!("{h}h{}m", m % 60),
        s if s < 2 * 86400 => format!("{h}h"),
        s if s < 8 * 86400 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

/// A duration as a person says it: `12s`, `3m05s`.
pub fn elapsed(duration: SignedDuration) -> String {
    let s = duration.as_secs().max(0);
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// `text` safe for a terminal: every control character but the newline (escape sequences that
/// would move the cursor, rewrite the title or hide text, carriage returns, backspaces) is shown
/// as `\u{..}` instead. Statuses and records are written by the operator from what a repository
/// or a tenant wrote: they reach a person's terminal only through this.
pub fn printable(text: &str) -> String {
    escaped(text, |c| c.is_control() && c != '\n')
}

/// `printable`, with newlines escaped too: one table cell, one line.
pub fn one_line(text: &str) -> String {
    escaped(text, char::is_control)
}

fn escaped(text: &str, escape: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Rows under a header, each column as wide as its widest cell, separated by three spaces (as
/// kubectl prints). Cells are made `one_line`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| one_line(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (cell, width) in cells.into_iter().zip(&widths) {
            out.push_str(cell);
            out.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 3));
        }
        // No padding after the last column (nor after an empty last cell).
        let mut out = out.trim_end().to_string();
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::at;

    #[test]
    fn ages_are_written_as_kubectl_writes_them() {
        let now = at(0);
        let ago = |s: i64| age(at(-s), now);
        assert_eq!(ago(0), "0s");
        assert_eq!(ago(119), "119s");
        assert_eq!(ago(120), "2m0s");
        assert_eq!(ago(200), "3m20s");
        assert_eq!(ago(600), "10m");
        assert_eq!(ago(45 * 60), "45m");
        assert_eq!(ago(2 * 3600), "120m");
        assert_eq!(ago(3 * 3600), "3h0m");
        assert_eq!(ago(5 * 3600 + 30 * 60), "5h30m");
        assert_eq!(ago(8 * 3600), "8h");
        assert_eq!(ago(30 * 3600), "30h");
        assert_eq!(ago(2 * 86400), "2d0h");
        assert_eq!(ago(3 * 86400 + 5 * 3600), "3d5h");
        assert_eq!(ago(8 * 86400), "8d");
        assert_eq!(ago(45 * 86400), "45d");
        // A clock behind the server's never gives a negative age.
        assert_eq!(age(at(10), now), "0s");
    }

    #[test]
    fn elapsed_times_are_short() {
        assert_eq!(elapsed(SignedDuration::from_secs(9)), "9s");
        assert_eq!(elapsed(SignedDuration::from_secs(60)), "1m00s");
        assert_eq!(elapsed(SignedDuration::from_secs(185)), "3m05s");
    }

    #[test]
    fn control_characters_from_statuses_never_reach_the_terminal() {
        // A title rewrite, a colour, a carriage return hiding the start of the line.
        let hostile = "ok\u{1b}]0;pwned\u{7}\u{1b}[31m red\rfake\nnext\u{9b}2J";
        let shown = printable(hostile);
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "ok\\u{1b}]0;pwned\\u{7}\\u{1b}[31m red\\u{d}fake\nnext\\u{9b}2J"
        );
        assert!(!one_line(hostile).contains('\n'));
        let t = table(&["NAME"], &[vec![hostile.to_string()]]);
        assert_eq!(t.lines().count(), 2, "{t}");
        assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
        assert_eq!(printable("plain Ünïcode ✓"), "plain Ünïcode ✓");
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec!["a".to_string(), "Completed".to_string(), "1s".to_string()],
            vec![
                "longer-name".to_string(),
                "Failed".to_string(),
                "2d".to_string(),
            ],
            vec!["b".to_string(), "Running".to_string(), String::new()],
        ];
        assert_eq!(
            table(&["NAME", "PHASE", "AGE"], &rows),
            "NAME          PHASE       AGE\n\
             a             Completed   1s\n\
             longer-name   Failed      2d\n\
             b             Running\n"
        );
    }
}

//! Text a guest controls, made safe for a log line: its stderr and stdout
//! lines, the function and module names in its trap reports (a component's
//! name section may hold any bytes), whatever it passes for a host message
//! to quote. Control characters but tab are escaped (`\r`, `\n`,
//! `\u{1b}`), so that no guest text can end a line, start a forged one,
//! or rewrite a terminal; and the escaped text is cut to a length, so the
//! cap holds after escaping (a control character grows to six bytes).
//!
//! The log's text formatter passes every message through [`escape_capped`] too
//! (`logging.rs`), whatever built it: one place where no raw CR, LF or ESC
//! can pass.

/// The longest a guest's name (a function's, a module's) is shown.
pub const MAX_NAME: usize = 256;

/// `text` escaped and cut to at most `cap` bytes (`...` marks a cut).
pub fn escape_capped(text: &str, cap: usize) -> String {
    let (shown, used) = escaped_prefix(text.as_bytes(), cap);
    if used == text.len() {
        return shown;
    }
    escaped_prefix(text.as_bytes(), cap.saturating_sub(3)).0 + "..."
}

/// The longest prefix of `bytes` whose escaped text fits in `cap` bytes:
/// the text (invalid UTF-8 shown as U+FFFD) and how many bytes it took.
/// At least one character is taken, whatever `cap` is, so that a caller
/// cutting a long text into lines always gets on.
pub fn escaped_prefix(bytes: &[u8], cap: usize) -> (String, usize) {
    let mut shown = String::new();
    let mut used = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            let before = shown.len();
            match needs_escape(c) {
                true => shown.extend(c.escape_debug()),
                false => shown.push(c),
            }
            if shown.len() > cap && used > 0 {
                shown.truncate(before);
                return (shown, used);
            }
            used += c.len_utf8();
        }
        if !chunk.invalid().is_empty() {
            if shown.len() + 3 > cap && used > 0 {
                return (shown, used);
            }
            shown.push(char::REPLACEMENT_CHARACTER);
            used += chunk.invalid().len();
        }
    }
    (shown, used)
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_tab_kept() {
        let escape = |text: &str| escape_capped(text, usize::MAX);
        assert_eq!(escape("plain\ttext"), "plain\ttext");
        assert_eq!(escape("fake\rWARN \x1b[2Kline\nnext"), "fake\\rWARN \\u{1b}[2Kline\\nnext");
        assert_eq!(escape("del\u{7f}"), "del\\u{7f}");
    }

    /// The cap holds after escaping: a line of DEL characters, each six
    /// bytes escaped, is cut at the cap, not six times over it.
    #[test]
    fn the_cap_holds_after_escaping() {
        let dels = vec![0x7f; 4096];
        let (shown, used) = escaped_prefix(&dels, 4096);
        assert!(shown.len() <= 4096, "{}", shown.len());
        assert_eq!(used, 4096 / 6);
        assert_eq!(shown.len(), used * 6);
        // Whatever the cap, a prefix makes progress.
        assert_eq!(escaped_prefix(&dels, 1).1, 1);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let (shown, used) = escaped_prefix(b"a\xffb", 100);
        assert_eq!((shown.as_str(), used), ("a\u{fffd}b", 3));
    }

    #[test]
    fn a_capped_text_says_it_was_cut() {
        assert_eq!(escape_capped("short", 10), "short");
        let cut = escape_capped(&"n\n".repeat(100), 20);
        assert!(cut.len() <= 20 && cut.ends_with("..."), "{cut}");
    }
}

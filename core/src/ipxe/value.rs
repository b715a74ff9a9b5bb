//! What a configuration value may contain to be written into a script.
//!
//! iPXE's script reader (script.c, exec.c) splits the file into lines at
//! `\n`, joins a line ending in `\` with the next one, then splits each line
//! into whitespace-separated tokens; a token that is exactly `||`, `&&` or `;`
//! ends a command and a token starting with `#` starts a comment; finally
//! `${name}` in a token is replaced by a setting. It has no quoting. So a
//! value is refused, never escaped, when it could end its line, glue the next
//! line on, start another command, hide the rest of its line, or (for values
//! that must arrive literally, such as CHAP secrets) be rewritten by setting
//! expansion.

use core::fmt;

/// Why a value cannot be written into a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ValueError {
    /// The value is empty where iPXE needs a word.
    Empty,
    /// A control character (newline, tab, NUL, DEL, ...): it would end the line.
    ControlCharacter,
    /// A space where a single word is needed.
    Whitespace,
    /// A backslash: at the end of a line iPXE joins the next line to it.
    Backslash,
    /// A word that is exactly `||`, `&&` or `;`: iPXE starts another command there.
    CommandSeparator,
    /// A word starting with `#`: iPXE ignores the rest of the line.
    Comment,
    /// A leading `-` on a command's first argument: iPXE would parse it as an option.
    LeadingDash,
    /// `${`: iPXE would replace it by a setting, so the value would not
    /// arrive as written.
    SettingExpansion,
    /// `:` or `@` in a CHAP value that dracut reads from
    /// `netroot=iscsi:user:secret@…`: its parser splits the value there.
    NetrootSeparator,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValueError::Empty => "is empty",
            ValueError::ControlCharacter => "contains a control character (newline, tab, ...)",
            ValueError::Whitespace => "contains a space",
            ValueError::Backslash => "contains a backslash (iPXE line continuation)",
            ValueError::CommandSeparator => "contains a word ||, && or ; (iPXE command separator)",
            ValueError::Comment => "contains a word starting with # (iPXE comment)",
            ValueError::LeadingDash => "starts with - (iPXE would read it as an option)",
            ValueError::SettingExpansion => "contains ${ (iPXE would expand it)",
            ValueError::NetrootSeparator => {
                "contains : or @ (dracut's netroot=iscsi:user:secret@... would split it there)"
            }
        })
    }
}

/// How much of iPXE's syntax a value may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expansion {
    /// `${...}` is allowed (URLs may say `${mac:hexhyp}`).
    Allowed,
    /// The value must reach its command byte for byte.
    Literal,
}

fn check_chars(value: &str, expansion: Expansion) -> Result<(), ValueError> {
    if value.chars().any(char::is_control) {
        return Err(ValueError::ControlCharacter);
    }
    if value.contains('\\') {
        return Err(ValueError::Backslash);
    }
    if expansion == Expansion::Literal && value.contains("${") {
        return Err(ValueError::SettingExpansion);
    }
    Ok(())
}

fn check_word(word: &str) -> Result<(), ValueError> {
    if matches!(word, "||" | "&&" | ";") {
        return Err(ValueError::CommandSeparator);
    }
    if word.starts_with('#') {
        return Err(ValueError::Comment);
    }
    Ok(())
}

/// A value that must stay one word (a URL, an IQN, a secret).
pub(crate) fn check_word_value(value: &str, expansion: Expansion) -> Result<(), ValueError> {
    if value.is_empty() {
        return Err(ValueError::Empty);
    }
    check_chars(value, expansion)?;
    if value.contains(' ') {
        return Err(ValueError::Whitespace);
    }
    check_word(value)
}

/// A one-word value that is the first argument of its command (a URL):
/// iPXE's getopt stops at the first word that is not an option.
pub(crate) fn check_first_arg(value: &str, expansion: Expansion) -> Result<(), ValueError> {
    check_word_value(value, expansion)?;
    if value.starts_with('-') {
        return Err(ValueError::LeadingDash);
    }
    Ok(())
}

/// A value made of space-separated words (a kernel command line); may be empty.
pub(crate) fn check_words_value(value: &str, expansion: Expansion) -> Result<(), ValueError> {
    check_chars(value, expansion)?;
    value.split(' ').try_for_each(check_word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_pass() {
        for v in [
            "tftp://192.0.2.1/vmlinuz",
            "http://boot/${mac:hexhyp}/x",
            "a#b",
            "a;b",
            "x||y",
        ] {
            assert_eq!(check_word_value(v, Expansion::Allowed), Ok(()), "{v}");
        }
        assert_eq!(
            check_words_value("root=/dev/sda1 quiet  console=ttyS0", Expansion::Allowed),
            Ok(())
        );
        assert_eq!(check_words_value("", Expansion::Allowed), Ok(()));
    }

    #[test]
    fn injection_attempts_are_refused() {
        use ValueError::*;
        for (v, want) in [
            ("", Empty),
            ("a\nshell", ControlCharacter),
            ("a\rshell", ControlCharacter),
            ("a\tb", ControlCharacter),
            ("a\u{0}", ControlCharacter),
            ("a\u{7f}", ControlCharacter),
            ("a\u{85}", ControlCharacter),
            ("url\\", Backslash),
            ("a b", Whitespace),
            ("||", CommandSeparator),
            ("&&", CommandSeparator),
            (";", CommandSeparator),
            ("#x", Comment),
        ] {
            assert_eq!(check_word_value(v, Expansion::Allowed), Err(want), "{v:?}");
        }
        assert_eq!(
            check_word_value("pa${ss}", Expansion::Literal),
            Err(SettingExpansion)
        );
        assert_eq!(check_word_value("pa$s", Expansion::Literal), Ok(()));
        assert_eq!(
            check_first_arg("--help", Expansion::Allowed),
            Err(LeadingDash)
        );
        assert_eq!(check_word_value("-secret-", Expansion::Literal), Ok(()));
        assert_eq!(
            check_words_value("quiet || shell", Expansion::Allowed),
            Err(CommandSeparator)
        );
        assert_eq!(
            check_words_value("quiet ; shell", Expansion::Allowed),
            Err(CommandSeparator)
        );
        assert_eq!(
            check_words_value("quiet #x", Expansion::Allowed),
            Err(Comment)
        );
        assert_eq!(
            check_words_value("quiet\nshell", Expansion::Allowed),
            Err(ControlCharacter)
        );
    }
}

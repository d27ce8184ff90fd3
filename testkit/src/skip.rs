//! SKIP lines that a user sees: the test runner captures `eprintln!` of passing tests, so a
//! skip written that way would be silent. [`skip!`](crate::skip) writes to the stderr handle.

/// Writes one `SKIP ...` line to the process's stderr, past the test runner's capture.
pub fn write_skip_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// `skip!("SKIP: {test}: ...")`: formats like `eprintln!`, but the line is not captured.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {
        $crate::skip::write_skip_line(format_args!($($arg)*))
    };
}

//! Logging shim: `trace!`..`error!` map to `log` or `defmt`, or to nothing when
//! neither feature is on. The no-op form still evaluates its arguments so a
//! build without logging sees the same warnings. Only `{}`, `{:?}` and `{:#x}`
//! formats are portable across both back ends.
#![allow(unused_macros)]

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` are mutually exclusive");

macro_rules! log_shim {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "log")]
        ::log::$level!($($arg)+);
        #[cfg(feature = "defmt")]
        ::defmt::$level!($($arg)+);
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        {
            let _ = ($($arg)+);
        }
    }};
}

macro_rules! trace { ($($arg:tt)+) => { log_shim!(trace, $($arg)+) }; }
macro_rules! debug { ($($arg:tt)+) => { log_shim!(debug, $($arg)+) }; }
macro_rules! info { ($($arg:tt)+) => { log_shim!(info, $($arg)+) }; }
macro_rules! warn { ($($arg:tt)+) => { log_shim!(warn, $($arg)+) }; }
macro_rules! error { ($($arg:tt)+) => { log_shim!(error, $($arg)+) }; }

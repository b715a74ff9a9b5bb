//! Data transfer: R2T, immediate data, residuals, DataSN, CmdSN window.

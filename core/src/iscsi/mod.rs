//! iscsi (placeholder: being written).

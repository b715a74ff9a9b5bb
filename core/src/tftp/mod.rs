//! tftp (placeholder: being written).

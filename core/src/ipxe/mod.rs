//! ipxe (placeholder: being written).

//! scsi (placeholder: being written).

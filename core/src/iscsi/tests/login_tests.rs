//! Login: CHAP, discovery, failures, reinstatement.

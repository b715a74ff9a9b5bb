//! MODE SENSE / MODE SELECT: caching and control pages.

//! A `core::fmt::Write` sink over a caller's byte slice that keeps counting
//! past its end, so a too-small buffer reports the size it would have needed.

use core::fmt;

/// Writes into a fixed byte slice. Text that does not fit is dropped but
/// counted: [`SliceWriter::required`] is the full length of everything
/// written, and [`SliceWriter::finish`] turns an overflow into an error.
#[derive(Debug)]
pub struct SliceWriter<'a> {
    buf: &'a mut [u8],
    written: usize,
    required: usize,
}

impl<'a> SliceWriter<'a> {
    /// A writer filling `buf` from its start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            written: 0,
            required: 0,
        }
    }

    /// Bytes everything written so far needs, whether or not it fit.
    pub fn required(&self) -> usize {
        self.required
    }

    /// `Ok(len)` if everything fit (the text is `buf[..len]`), else
    /// `Err(required)`.
    pub fn finish(self) -> Result<usize, usize> {
        if self.required <= self.buf.len() {
            Ok(self.written)
        } else {
            Err(self.required)
        }
    }
}

impl fmt::Write for SliceWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.required = self.required.saturating_add(s.len());
        // Once something did not fit, nothing after it is stored either, so
        // the stored prefix is always a prefix of the full text.
        if self.written == self.required.saturating_sub(s.len()) {
            if let Some(dst) = self
                .buf
                .get_mut(self.written..)
                .and_then(|rest| rest.get_mut(..s.len()))
            {
                dst.copy_from_slice(s.as_bytes());
                self.written = self.written.saturating_add(s.len());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn fits() {
        let mut buf = [0xa5u8; 8];
        let mut w = SliceWriter::new(&mut buf);
        w.write_str("abc").ok();
        w.write_str("de").ok();
        assert_eq!(w.finish(), Ok(5));
        assert_eq!(&buf, b"abcde\xa5\xa5\xa5");
    }

    #[test]
    fn overflow_reports_required_size() {
        let mut buf = [0u8; 4];
        let mut w = SliceWriter::new(&mut buf);
        w.write_str("abc").ok();
        w.write_str("defg").ok();
        w.write_str("h").ok();
        assert_eq!(w.required(), 8);
        assert_eq!(w.finish(), Err(8));
    }

    #[test]
    fn empty_buffer() {
        let mut w = SliceWriter::new(&mut []);
        w.write_str("").ok();
        w.write_str("x").ok();
        assert_eq!(w.finish(), Err(1));
    }
}

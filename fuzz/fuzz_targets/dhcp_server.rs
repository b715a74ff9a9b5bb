#![no_main]
// Placeholder: the owner of this protocol replaces it with the real target.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = data;
});

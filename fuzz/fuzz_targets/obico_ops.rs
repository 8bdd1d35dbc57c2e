#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| lanlink::fuzz::obico_ops(data));

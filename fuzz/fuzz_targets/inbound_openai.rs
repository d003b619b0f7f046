#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_types::gateway_config::InboundKind;

fuzz_target!(|data: &[u8]| portcullis_fuzz::inbound(InboundKind::Openai, data));

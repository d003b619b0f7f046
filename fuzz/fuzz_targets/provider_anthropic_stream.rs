#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis_types::gateway_config::ProviderKind;

fuzz_target!(|data: &[u8]| portcullis_fuzz::provider_stream(ProviderKind::Anthropic, data));

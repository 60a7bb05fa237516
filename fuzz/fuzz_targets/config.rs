//! Config parsing: any text as the config file. Must never panic: every problem is a
//! diagnostic with its key (and line when known).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = [("XAAS_FUZZ_TOKEN".to_string(), "t".to_string())];
    if let Err(diags) =
        xaas::settings::load_from_str(std::path::Path::new("/nonexistent/xaas.yaml"), text, &env)
    {
        assert!(!diags.0.is_empty(), "a refused config says why");
    }
});

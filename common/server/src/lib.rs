//! What ferry's processes share: the layered configuration loader, the gRPC health
//! service, signals and process setup.
#![warn(missing_docs)]

pub mod config;
pub mod health;
pub mod metrics_http;
pub mod process;

/// An error with its sources, one after the other: tonic's own `Display` says only
/// "transport error".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source_opt = error.source();
    while let Some(source) = source_opt {
        // Wrappers often repeat their source's words ("tcp connect error: tcp connect error").
        let source_text = source.to_string();
        if !text.ends_with(&source_text) {
            text.push_str(": ");
            text.push_str(&source_text);
        }
        source_opt = source.source();
    }
    text
}

//! The Prometheus text exposition (prometheus-client) of one or more metric registries: the
//! intake's and the scheduler's, alone or on one `/metrics` page.

use prometheus_client::registry::Registry;

/// The registries' metrics, one after the other, closed by the single `# EOF` the format wants.
pub fn exposition(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

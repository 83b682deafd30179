//! The time an RPC may spend: the caller's gRPC deadline (minus a margin so
//! the answer arrives before the caller gives up), capped by the configured limit.

use std::time::Duration;

use tokio::time::Instant;

/// Parses a `grpc-timeout` header value (`100m`, `30S`, `5000000u`, …).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    // The unit is the last character, which need not be one byte long.
    let unit = v.chars().next_back()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n.checked_mul(3600)?),
        'M' => Duration::from_secs(n.checked_mul(60)?),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

pub fn deadline<T>(req: &tonic::Request<T>, limit: Duration) -> Instant {
    let asked = req.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout);
    let budget = asked.map_or(limit, |a| a.min(limit));
    let margin = (budget / 10).min(Duration::from_secs(2));
    Instant::now() + budget.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("100m", Some(Duration::from_millis(100)))]
    #[case("30S", Some(Duration::from_secs(30)))]
    #[case("2M", Some(Duration::from_secs(120)))]
    #[case("5u", Some(Duration::from_micros(5)))]
    #[case("x", None)]
    #[case("", None)]
    #[case("10Q", None)]
    // Found by fuzzing (ids): a multi-byte last character panicked.
    #[case("a\u{465}", None)]
    #[case("5\u{e9}", None)]
    fn parses(#[case] v: &str, #[case] want: Option<Duration>) {
        assert_eq!(parse_grpc_timeout(v), want);
    }
}

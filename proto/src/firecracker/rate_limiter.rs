//! `definitions/RateLimiter` and `definitions/TokenBucket`: IO rate limits for drives
//! (`rate_limiter`) and network interfaces (`rx_rate_limiter`, `tx_rate_limiter`).

use serde::{Deserialize, Serialize};

use super::ValidationError;

/// Defines an IO rate limiter with independent bytes/s and ops/s limits. Limits are defined by
/// configuring each of the _bandwidth_ and _ops_ token buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Token bucket with bytes as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Token bucket with operations as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

impl RateLimiter {
    /// Checks both buckets.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for bucket in [&self.bandwidth, &self.ops].into_iter().flatten() {
            bucket.validate()?;
        }
        Ok(())
    }
}

/// Defines a token bucket with a maximum capacity (size), an initial burst size
/// (`one_time_burst`) and an interval for refilling purposes (`refill_time`). The refill-rate is
/// derived from size and `refill_time`, and it is the constant rate at which the tokens
/// replenish. The refill process only starts happening after the initial burst budget is
/// consumed. Consumption from the token bucket is unbounded in speed which allows for bursts
/// bound in size by the amount of tokens available. Once the token bucket is empty,
/// consumption speed is bound by the `refill_rate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// The total number of tokens this bucket can hold.
    pub size: u64,
    /// The initial size of a token bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// The amount of milliseconds it takes for the bucket to refill.
    pub refill_time: u64,
}

impl TokenBucket {
    /// Whether the bucket limits anything: as in Firecracker, a `size` or `refill_time` of 0
    /// means "no limit" (the bucket is not created), which is not an error.
    pub fn is_enabled(&self) -> bool {
        self.size != 0 && self.refill_time != 0
    }

    /// Checks that the refill time can be expressed in nanoseconds (u64), as Firecracker
    /// computes the refill rate in nanoseconds.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.refill_time.checked_mul(1_000_000).is_none() {
            return Err(ValidationError::InvalidTokenBucket {
                refill_time: self.refill_time,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_time_is_required() {
        let err = serde_json::from_str::<TokenBucket>(r#"{"size":100}"#).unwrap_err();
        assert!(err.to_string().contains("refill_time"), "{err}");
    }

    #[test]
    fn zero_bucket_is_disabled_not_invalid() {
        let b = TokenBucket::default();
        assert!(!b.is_enabled());
        assert!(b.validate().is_ok());
    }

    #[test]
    fn huge_refill_time_is_rejected() {
        let b = TokenBucket {
            size: 1,
            one_time_burst: None,
            refill_time: u64::MAX,
        };
        let rl = RateLimiter {
            bandwidth: None,
            ops: Some(b),
        };
        assert!(matches!(
            rl.validate(),
            Err(ValidationError::InvalidTokenBucket { .. })
        ));
    }

    #[test]
    fn none_fields_are_skipped() {
        let rl = RateLimiter {
            bandwidth: Some(TokenBucket {
                size: 10,
                one_time_burst: None,
                refill_time: 100,
            }),
            ops: None,
        };
        assert_eq!(
            serde_json::to_string(&rl).unwrap(),
            r#"{"bandwidth":{"size":10,"refill_time":100}}"#
        );
    }
}

//! The exact cost of one request (billing.md "Cost of one request").
//!
//! Prices are nano-USD per **million** tokens, so a component is
//! `tokens × price / 1_000_000` nano-USD, generally not a whole number. Rounding policy:
//!
//! - The three products `tokens × price` are exact in `i128` (each factor is below 2^63).
//! - `total_cost` is their exact sum divided by 10^6 **once**, rounded half to even to
//!   the nano-USD: at most 0.5 nano from the exact value, whatever the token mix.
//! - Each component (`input_cost`, `output_cost`, `cached_cost`) is its own product
//!   rounded the same way, for the usage log only. Because the total is not the sum of
//!   the rounded components, `input + output + cached` may differ from `total` by at
//!   most 1 nano-USD (three roundings of ≤ 0.5 each against one of ≤ 0.5, and the
//!   difference is an integer, so |difference| ≤ 1).
//! - `actual_cost = rate_multiplier.apply(total_cost)`: the multiplier (exact
//!   millionths) applied to the rounded total, rounded half to even once more. A
//!   multiplier of 0 makes the request free. Against the exact rational
//!   `Σ tokens × price × multiplier / 10^6`, a record's `actual_cost` is off by at most
//!   `0.5 × multiplier + 0.5` nano-USD, and a sum over records by at most that per record.
//!
//! Nothing here is floating point; an amount that does not fit in `i64` nano-USD
//! (9.2 billion USD, unreachable by a real request) is an error, never a wrap.

use tollgate_shared::Multiplier;

use crate::model::Price;

/// Nano-USD per million tokens, as stored in the price table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub input_per_mtok_nanos: i64,
    pub output_per_mtok_nanos: i64,
    pub cached_input_per_mtok_nanos: i64,
}

impl Rates {
    /// Free: every price 0 (unpriced models outside strict mode, uncharged estimates).
    pub const ZERO: Rates = Rates {
        input_per_mtok_nanos: 0,
        output_per_mtok_nanos: 0,
        cached_input_per_mtok_nanos: 0,
    };
}

impl From<&Price> for Rates {
    fn from(p: &Price) -> Self {
        Self {
            input_per_mtok_nanos: p.input_per_mtok_nanos,
            output_per_mtok_nanos: p.output_per_mtok_nanos,
            cached_input_per_mtok_nanos: p.cached_input_per_mtok_nanos,
        }
    }
}

/// Token counts of one request as the upstream reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: i64,
    pub output: i64,
    /// `input_tokens_details.cached_tokens`; part of `input`.
    pub cached: i64,
}

/// Every amount in nano-USD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    pub input_nanos: i64,
    pub output_nanos: i64,
    pub cached_nanos: i64,
    /// Before the rate multiplier (what subscription windows count).
    pub total_nanos: i64,
    /// After the rate multiplier (what balances and key quotas are charged).
    pub actual_nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("{0} must not be negative")]
    Negative(&'static str),
    #[error("cost does not fit in 64-bit nano-USD")]
    OutOfRange,
}

const PER_MTOK: i128 = 1_000_000;

/// `n / d` rounded half to even; `n >= 0`, `d > 0`.
fn div_half_even(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    // Compare 2r with d without overflow: r < d, so d - r > 0.
    let rest = d - r;
    if r > rest || (r == rest && q % 2 != 0) {
        q + 1
    } else {
        q
    }
}

fn non_negative(name: &'static str, v: i64) -> Result<i128, CostError> {
    if v < 0 {
        return Err(CostError::Negative(name));
    }
    Ok(i128::from(v))
}

fn to_nanos(v: i128) -> Result<i64, CostError> {
    i64::try_from(v).map_err(|_| CostError::OutOfRange)
}

/// The cost of one request. Token counts and prices must be non-negative.
pub fn compute(tokens: Tokens, rates: Rates, multiplier: Multiplier) -> Result<Cost, CostError> {
    let input = non_negative("input_tokens", tokens.input)?;
    let output = non_negative("output_tokens", tokens.output)?;
    let cached = non_negative("cached_tokens", tokens.cached)?;
    let p_in = non_negative("input price", rates.input_per_mtok_nanos)?;
    let p_out = non_negative("output price", rates.output_per_mtok_nanos)?;
    let p_cached = non_negative("cached input price", rates.cached_input_per_mtok_nanos)?;

    let billed_input = (input - cached).max(0);
    // Each product is below 2^126; only the sum can leave i128.
    let input_product = billed_input * p_in;
    let output_product = output * p_out;
    let cached_product = cached * p_cached;
    let sum = input_product
        .checked_add(output_product)
        .and_then(|s| s.checked_add(cached_product))
        .ok_or(CostError::OutOfRange)?;

    let total_nanos = to_nanos(div_half_even(sum, PER_MTOK))?;
    // `Multiplier::apply` saturates at the i64 range; a saturated charge would be wrong,
    // so the range is checked first with the same rounding.
    to_nanos(div_half_even(
        i128::from(total_nanos) * i128::from(multiplier.ppm()),
        PER_MTOK,
    ))?;
    Ok(Cost {
        input_nanos: to_nanos(div_half_even(input_product, PER_MTOK))?,
        output_nanos: to_nanos(div_half_even(output_product, PER_MTOK))?,
        cached_nanos: to_nanos(div_half_even(cached_product, PER_MTOK))?,
        total_nanos,
        actual_nanos: multiplier.apply(total_nanos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference arithmetic on decimal digit strings: independent of `i128` division,
    /// unbounded, obviously exact. Digits are little-endian.
    mod dec {
        pub fn of(v: u128) -> Vec<u8> {
            let mut d: Vec<u8> = v.to_string().bytes().rev().map(|b| b - b'0').collect();
            trim(&mut d);
            d
        }

        fn trim(d: &mut Vec<u8>) {
            while d.len() > 1 && d.last() == Some(&0) {
                d.pop();
            }
        }

        pub fn add(a: &[u8], b: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut carry = 0u8;
            for i in 0..a.len().max(b.len()) {
                let s = a.get(i).copied().unwrap_or(0) + b.get(i).copied().unwrap_or(0) + carry;
                out.push(s % 10);
                carry = s / 10;
            }
            if carry > 0 {
                out.push(carry);
            }
            trim(&mut out);
            out
        }

        pub fn mul(a: &[u8], b: &[u8]) -> Vec<u8> {
            let mut acc = vec![0u32; a.len() + b.len()];
            for (i, &x) in a.iter().enumerate() {
                for (j, &y) in b.iter().enumerate() {
                    acc[i + j] += u32::from(x) * u32::from(y);
                }
            }
            let mut out = Vec::with_capacity(acc.len() + 1);
            let mut carry = 0u32;
            for v in acc {
                let s = v + carry;
                out.push(u8::try_from(s % 10).unwrap());
                carry = s / 10;
            }
            while carry > 0 {
                out.push(u8::try_from(carry % 10).unwrap());
                carry /= 10;
            }
            trim(&mut out);
            out
        }

        /// `v / 10^k` rounded half to even, as a decimal string.
        pub fn div_pow10_half_even(v: &[u8], k: usize) -> String {
            let (low, high) = if v.len() > k {
                (&v[..k], v[k..].to_vec())
            } else {
                (v, vec![0])
            };
            // Compare the dropped digits with 5000…0 (most significant first).
            let mut dropped: Vec<u8> = low.iter().rev().copied().collect();
            while dropped.len() < k {
                dropped.insert(0, 0);
            }
            let mut half = vec![0u8; k];
            half[0] = 5;
            let odd = high[0] % 2 == 1;
            let q = match dropped.cmp(&half) {
                std::cmp::Ordering::Greater => add(&high, &[1]),
                std::cmp::Ordering::Equal if odd => add(&high, &[1]),
                _ => high,
            };
            q.iter().rev().map(|d| char::from(b'0' + d)).collect()
        }
    }

    fn reference_total(t: Tokens, r: Rates) -> String {
        let u = |v: i64| u128::try_from(v).unwrap();
        let billed = u(t.input.saturating_sub(t.cached).max(0));
        let sum = dec::add(
            &dec::add(
                &dec::mul(&dec::of(billed), &dec::of(u(r.input_per_mtok_nanos))),
                &dec::mul(&dec::of(u(t.output)), &dec::of(u(r.output_per_mtok_nanos))),
            ),
            &dec::mul(
                &dec::of(u(t.cached)),
                &dec::of(u(r.cached_input_per_mtok_nanos)),
            ),
        );
        dec::div_pow10_half_even(&sum, 6)
    }

    fn reference_apply(total: i64, m: Multiplier) -> String {
        let u = |v: i64| u128::try_from(v).unwrap();
        dec::div_pow10_half_even(&dec::mul(&dec::of(u(total)), &dec::of(u(m.ppm()))), 6)
    }

    fn rates(i: i64, o: i64, c: i64) -> Rates {
        Rates {
            input_per_mtok_nanos: i,
            output_per_mtok_nanos: o,
            cached_input_per_mtok_nanos: c,
        }
    }

    fn m(s: &str) -> Multiplier {
        s.parse().unwrap()
    }

    const GPT5: Rates = Rates {
        input_per_mtok_nanos: 1_250_000_000,
        output_per_mtok_nanos: 10_000_000_000,
        cached_input_per_mtok_nanos: 125_000_000,
    };

    #[test]
    fn spec_example() {
        // 1000 input of which 100 cached, 200 output, gpt-5 prices, group ×1.5.
        let t = Tokens {
            input: 1000,
            output: 200,
            cached: 100,
        };
        let c = compute(t, GPT5, m("1.5")).unwrap();
        assert_eq!(c.input_nanos, 1_125_000);
        assert_eq!(c.output_nanos, 2_000_000);
        assert_eq!(c.cached_nanos, 12_500);
        assert_eq!(c.total_nanos, 3_137_500);
        assert_eq!(c.actual_nanos, 4_706_250);
    }

    #[test]
    fn zero_multiplier_is_free_not_one() {
        let t = Tokens {
            input: 5000,
            output: 5000,
            cached: 0,
        };
        let c = compute(t, GPT5, Multiplier::ZERO).unwrap();
        assert!(c.total_nanos > 0);
        assert_eq!(c.actual_nanos, 0);
    }

    #[test]
    fn cached_above_input_bills_no_plain_input() {
        let t = Tokens {
            input: 10,
            output: 0,
            cached: 30,
        };
        let c = compute(t, rates(1_000_000, 0, 1_000_000), Multiplier::ONE).unwrap();
        assert_eq!(c.input_nanos, 0);
        assert_eq!(c.cached_nanos, 30);
        assert_eq!(c.total_nanos, 30);
    }

    #[test]
    fn total_is_rounded_once_and_half_to_even() {
        // 1 token at 0.5 nano per token: each component alone rounds to 0 (half to
        // even), the exact sum 1.5 rounds to 2.
        let half = rates(500_000, 500_000, 500_000);
        let t = Tokens {
            input: 1,
            output: 1,
            cached: 0,
        };
        let c = compute(t, half, Multiplier::ONE).unwrap();
        assert_eq!((c.input_nanos, c.output_nanos, c.total_nanos), (0, 0, 1));
        let t = Tokens {
            input: 2,
            output: 1,
            cached: 0,
        };
        let c = compute(t, half, Multiplier::ONE).unwrap();
        assert_eq!((c.input_nanos, c.output_nanos, c.total_nanos), (1, 0, 2));
        // 2.5 → 2, 3.5 → 4.
        let t = Tokens {
            input: 5,
            output: 0,
            cached: 0,
        };
        assert_eq!(compute(t, half, Multiplier::ONE).unwrap().total_nanos, 2);
        let t = Tokens {
            input: 7,
            output: 0,
            cached: 0,
        };
        assert_eq!(compute(t, half, Multiplier::ONE).unwrap().total_nanos, 4);
    }

    #[test]
    fn negative_and_overflow_are_errors() {
        let t = Tokens {
            input: -1,
            output: 0,
            cached: 0,
        };
        assert_eq!(
            compute(t, GPT5, Multiplier::ONE),
            Err(CostError::Negative("input_tokens"))
        );
        let t = Tokens {
            input: i64::MAX,
            output: i64::MAX,
            cached: 0,
        };
        let huge = rates(i64::MAX, i64::MAX, i64::MAX);
        assert_eq!(
            compute(t, huge, Multiplier::ONE),
            Err(CostError::OutOfRange)
        );
        let t = Tokens {
            input: i64::MAX,
            output: 0,
            cached: 0,
        };
        assert_eq!(
            compute(t, GPT5, Multiplier::ONE),
            Err(CostError::OutOfRange)
        );
    }

    #[test]
    fn reference_agrees_on_hand_cases() {
        assert_eq!(dec::div_pow10_half_even(&dec::of(2_500_000), 6), "2");
        assert_eq!(dec::div_pow10_half_even(&dec::of(3_500_000), 6), "4");
        assert_eq!(dec::div_pow10_half_even(&dec::of(499_999), 6), "0");
        assert_eq!(dec::div_pow10_half_even(&dec::of(500_001), 6), "1");
        assert_eq!(dec::div_pow10_half_even(&dec::of(0), 6), "0");
    }

    fn any_tokens() -> impl Strategy<Value = Tokens> {
        // Mostly realistic sizes, sometimes anything representable.
        let count = prop_oneof![0..2_000_000_i64, 0..i64::MAX];
        (count.clone(), count.clone(), count).prop_map(|(input, output, cached)| Tokens {
            input,
            output,
            cached,
        })
    }

    fn any_rates() -> impl Strategy<Value = Rates> {
        let price = prop_oneof![0..200_000_000_000_i64, 0..i64::MAX];
        (price.clone(), price.clone(), price).prop_map(|(i, o, c)| rates(i, o, c))
    }

    fn any_multiplier() -> impl Strategy<Value = Multiplier> {
        prop_oneof![
            Just(Multiplier::ZERO),
            Just(Multiplier::ONE),
            (0..10_000_000_i64).prop_map(|p| Multiplier::from_ppm(p).unwrap()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Against unbounded decimal arithmetic: the total is the exact sum rounded once,
        /// every component is its own product rounded, and the actual cost is the
        /// multiplier applied to the total. Out of range exactly when the reference
        /// does not fit in i64.
        #[test]
        fn exact_against_big_integer_reference(t in any_tokens(), r in any_rates(), m in any_multiplier()) {
            let want_total = reference_total(t, r);
            match compute(t, r, m) {
                Ok(c) => {
                    prop_assert_eq!(c.total_nanos.to_string(), want_total);
                    prop_assert_eq!(c.actual_nanos.to_string(), reference_apply(c.total_nanos, m));
                    let billed = t.input.saturating_sub(t.cached).max(0);
                    prop_assert_eq!(c.input_nanos.to_string(),
                        reference_total(Tokens { input: billed, output: 0, cached: 0 }, r));
                    prop_assert_eq!(c.output_nanos.to_string(),
                        reference_total(Tokens { input: 0, output: t.output, cached: 0 }, r));
                    prop_assert_eq!(c.cached_nanos.to_string(),
                        reference_total(Tokens { input: t.cached, output: 0, cached: t.cached }, r));
                    let parts = c.input_nanos + c.output_nanos + c.cached_nanos;
                    prop_assert!((parts - c.total_nanos).abs() <= 1);
                }
                Err(CostError::OutOfRange) => {
                    let fits = want_total
                        .parse::<i64>()
                        .is_ok_and(|total| reference_apply(total, m).parse::<i64>().is_ok());
                    prop_assert!(!fits, "fits: {}", want_total);
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        /// Many records: the sum of the charged amounts is exactly the sum of each
        /// record's `multiplier.apply(total)`, and stays within the stated per-record
        /// rounding (0.5 × multiplier + 0.5 nano) of the exact rational amount.
        #[test]
        fn sums_do_not_drift(
            records in proptest::collection::vec(
                ((0..10_000_000_i64, 0..10_000_000_i64, 0..10_000_000_i64),
                 (0..100_000_000_000_i64, 0..100_000_000_000_i64, 0..100_000_000_000_i64),
                 0..10_000_000_i64),
                1..200)
        ) {
            let mut charged: i64 = 0;
            let mut reapplied: i64 = 0;
            // Σ exact × 2·10^12, and the allowed error × 2·10^12.
            let mut exact_scaled: i128 = 0;
            let mut charged_scaled: i128 = 0;
            let mut allowed_scaled: i128 = 0;
            for ((input, output, cached), (pi, po, pc), ppm) in records {
                let t = Tokens { input, output, cached };
                let r = rates(pi, po, pc);
                let mult = Multiplier::from_ppm(ppm).unwrap();
                let c = compute(t, r, mult).unwrap();
                charged += c.actual_nanos;
                reapplied += mult.apply(c.total_nanos);
                let billed = i128::from((input - cached).max(0));
                let sum = billed * i128::from(pi)
                    + i128::from(output) * i128::from(po)
                    + i128::from(cached) * i128::from(pc);
                // exact actual = sum × ppm / 10^12
                exact_scaled += 2 * sum * i128::from(ppm);
                charged_scaled += 2 * 1_000_000_000_000 * i128::from(c.actual_nanos);
                // (0.5 × ppm/10^6 + 0.5) × 2·10^12 = ppm·10^6 + 10^12
                allowed_scaled += i128::from(ppm) * 1_000_000 + 1_000_000_000_000;
            }
            prop_assert_eq!(charged, reapplied);
            prop_assert!((charged_scaled - exact_scaled).abs() <= allowed_scaled);
        }
    }
}

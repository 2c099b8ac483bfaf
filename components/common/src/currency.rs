//! ISO 4217 currency codes: the only currencies an order can be priced and charged in.

/// The alphabetic codes of ISO 4217 List One (current currencies and funds) as published on
/// 2026-01-01: ANG, BGN, CUC, HRK, SLL and ZWL have moved to the historic list, XAD, XCG and
/// ZWG are new. Sorted, for binary search. When ISO amends the list, change it here and in
/// the `Currency` enum of `openapi.yaml`; a test keeps the two equal.
pub const ISO_4217: [&str; 178] = [
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BHD",
    "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK", "DJF",
    "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP",
    "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR",
    "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP",
    "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR",
    "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB",
    "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH",
    "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAD",
    "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF",
    "XPT", "XSU", "XTS", "XUA", "XXX", "YER", "ZAR", "ZMW", "ZWG",
];

/// ISO's code for "no currency is involved": a price in it is no price at all.
const NO_CURRENCY: &str = "XXX";

/// Whether an amount can be charged in `code`: a current ISO 4217 code other than XXX, in
/// capitals, exactly as the standard spells it.
pub fn is_chargeable(code: &str) -> bool {
    code != NO_CURRENCY && ISO_4217.binary_search(&code).is_ok()
}

/// The code an order is stored with: `code` as sent when chargeable, or in capitals when sent
/// all in lower case (`usd`, as Stripe spells it); `None` for anything else, mixed case too.
pub fn parse(code: &str) -> Option<String> {
    let upper = if code.bytes().all(|b| b.is_ascii_lowercase()) {
        code.to_ascii_uppercase()
    } else {
        code.to_owned()
    };
    is_chargeable(&upper).then_some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_three_capital_letters_without_repeats() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ISO_4217
                .iter()
                .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn current_codes_are_chargeable_and_others_are_not() {
        for ok in ["USD", "EUR", "JPY", "XCG", "ZWG", "SLE", "VED", "CHF"] {
            assert!(is_chargeable(ok), "{ok}");
        }
        // Made up, withdrawn (kuna, lev, old leone, Antillean guilder), no currency, lower
        // case, padded, too long.
        for bad in [
            "ABC", "HRK", "BGN", "SLL", "ANG", "XXX", "usd", " USD", "USDX", "", "US",
        ] {
            assert!(!is_chargeable(bad), "{bad}");
        }
    }

    #[test]
    fn lower_case_codes_are_read_in_capitals_and_mixed_case_is_refused() {
        assert_eq!(parse("usd").as_deref(), Some("USD"));
        assert_eq!(parse("EUR").as_deref(), Some("EUR"));
        assert_eq!(parse("Usd"), None);
        assert_eq!(parse("abc"), None);
        assert_eq!(parse("xxx"), None);
    }

    /// The enum of a schema in `openapi.yaml`: the first `enum: [...]` line after `name:`.
    fn openapi_enum(name: &str) -> Vec<&'static str> {
        let yaml = include_str!("../../../openapi.yaml");
        let line = yaml
            .lines()
            .skip_while(|l| l.trim() != format!("{name}:"))
            .find_map(|l| l.trim().strip_prefix("enum: ["))
            .unwrap_or_else(|| panic!("openapi.yaml has a {name} schema with an enum line"));
        line.trim_end_matches(']')
            .split(',')
            .map(str::trim)
            .collect()
    }

    /// The schema carries the same list, so generated clients and schemathesis know exactly
    /// which codes the service takes.
    #[test]
    fn openapi_yaml_lists_the_same_currencies() {
        let chargeable: Vec<&str> = ISO_4217
            .iter()
            .copied()
            .filter(|c| is_chargeable(c))
            .collect();
        assert_eq!(openapi_enum("Currency"), chargeable);
        let lower: Vec<String> = chargeable.iter().map(|c| c.to_ascii_lowercase()).collect();
        assert_eq!(openapi_enum("LowercaseCurrency"), lower);
    }
}

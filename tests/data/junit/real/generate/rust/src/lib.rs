//! A small crate whose tests cargo-nextest reports as JUnit.

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn adds_item() {
        println!("adding to the cart");
        assert_eq!(1 + 1, 2);
    }

    #[test]
    fn computes_total() {
        assert_eq!(10.0 * 1.2, 12.5, "total with tax <&>");
    }

    #[test]
    #[ignore = "sandbox is down"]
    fn pays_by_cheque() {}

    #[test]
    fn flaky_then_passes() {
        // Fails on the first try (the marker is new), passes on nextest's retry.
        let dir = std::env::var("FLAKY_DIR").unwrap_or_else(|_| ".".into());
        let marker = Path::new(&dir).join("nextest-flaky");
        if std::fs::OpenOptions::new().write(true).create_new(true).open(marker).is_ok() {
            panic!("first try fails");
        }
    }

    #[test]
    fn ünïcødé_straße() {}

    mod checkout {
        #[test]
        #[should_panic(expected = "payment declined")]
        fn declines() {
            panic!("payment declined");
        }
    }
}

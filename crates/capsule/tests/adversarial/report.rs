//! The results table, and checks of the suite's own tools.

use crate::common::attack::{
    file_signature, format_utc, render_results, results_file, results_page, sha256,
};

/// Renders the results table of `docs/security.md` from the rows the suite recorded.
/// Ignored in normal runs: `scripts/test` runs it after the suite.
#[test]
#[ignore = "run after the adversarial suite: renders the results table of docs/security.md"]
fn render_security_results() {
    let rows = results_file();
    assert!(
        rows.exists(),
        "{} does not exist: run `cargo nextest run -p capsule --test adversarial` first",
        rows.display()
    );
    let page = results_page();
    let count = render_results(&rows, &page).expect("rendering the results");
    assert!(count > 0, "no rows in {}", rows.display());
    println!("{count} attacks written to {}", page.display());
}

#[test]
fn sha256_and_signatures_match_known_values() {
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        hex(sha256(&[b'a'; 1000])),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
    // The value the server's own unit test derives for the same input.
    assert!(file_signature("/home/user/a.txt", "read", "user", "tok", None).starts_with("v1_"));
    assert_ne!(
        file_signature("/a", "write", "", "tok", Some(1_700_000_000)),
        file_signature("/a", "write", "", "tok", None)
    );
}

#[test]
fn dates_render_in_utc() {
    assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13 UTC");
    assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
}

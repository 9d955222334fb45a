//! Property tests of relay-message's promises, on arbitrary input:
//! - no function panics, whatever the bytes; the header block is a prefix
//!   of the message and its spans cover it byte for byte; `find` and `has`
//!   agree;
//! - a header reads the same whatever its name's case and however its
//!   value is folded, and a folded line is never a header of its own;
//! - a mailbox written with any display name reads back: same address,
//!   same name (control characters aside);
//! - `to_crlf` leaves only CRLF line endings and changes nothing twice.
#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use proptest::prelude::*;
use relay_message::{
    address_list, display_name, fields, find, first_address, has, header_block, mailbox, phrase,
    scrub, to_crlf, unfold,
};

/// Bytes rich in what header syntax is made of.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        3 => Just(b':'),
        3 => Just(b' '),
        1 => Just(b'\t'),
        2 => prop::sample::select(b"\"()<>,;@\\".to_vec()),
        4 => b'a'..=b'c',
        2 => any::<u8>(),
    ];
    prop::collection::vec(byte, 0..max)
}

/// Text rich in what address syntax is made of.
fn address_text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => prop::sample::select(vec!['"', '(', ')', '<', '>', ',', ';', ':', '@', '\\', '.', ' ']),
        4 => prop::char::range('a', 'c'),
        1 => any::<char>(),
    ];
    prop::collection::vec(c, 0..40).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_functions_never_panic_and_agree(message in header_bytes(200)) {
        let block = header_block(&message);
        prop_assert!(message.starts_with(block));
        let spans: Vec<_> = fields(block).collect();
        let covered: Vec<u8> = spans.iter().flat_map(|f| f.raw(block).to_vec()).collect();
        prop_assert_eq!(covered, block.to_vec());
        for name in ["a", "b", "A", "ab", "From"] {
            prop_assert_eq!(find(&message, name).is_some(), has(&message, name));
        }
        for f in &spans {
            let value = f.value(block);
            let _ = (address_list(&value), first_address(&value), display_name(&value));
        }
        let text = String::from_utf8_lossy(&message);
        let _ = (address_list(&text), display_name(&text), phrase(&text));
    }

    #[test]
    fn name_case_and_folding_do_not_change_a_header(
        value in "[a-z]{1,8}( [a-z]{1,8}){0,4}",
        upper in any::<bool>(),
        folds in prop::collection::vec(any::<bool>(), 5),
        fold_with_tab in any::<bool>(),
        bare_lf in any::<bool>(),
    ) {
        let eol = if bare_lf { "\n" } else { "\r\n" };
        let fold = if fold_with_tab { "\t" } else { " " };
        // Fold at the chosen spaces: the space stays, as the fold's white space.
        let mut folded = String::new();
        for (i, word) in value.split(' ').enumerate() {
            if i > 0 {
                if folds[i - 1] {
                    folded.push_str(eol);
                    folded.push_str(fold);
                } else {
                    folded.push(' ');
                }
            }
            folded.push_str(word);
        }
        let name = if upper { "X-CAMPAIGN" } else { "x-campaign" };
        let message = format!("To: a@b{eol}{name}: {folded}{eol}Subject: s{eol}{eol}X-Campaign: body");
        let expected = value.split(' ').collect::<Vec<_>>().join(" ");
        let got = find(message.as_bytes(), "X-Campaign").unwrap();
        let fold_char = fold.chars().next().unwrap();
        prop_assert_eq!(got.replace(fold_char, " "), expected);
        prop_assert!(has(message.as_bytes(), "subject"));
    }

    #[test]
    fn folded_lines_are_never_headers(
        name in "[A-Za-z-]{1,12}",
        fold in prop::sample::select(vec![" ", "\t", "  "]),
    ) {
        let message = format!("Subject: hello\r\n{fold}{name}: x\r\n\r\n");
        let is_subject = name.eq_ignore_ascii_case("subject");
        prop_assert_eq!(has(message.as_bytes(), &name), is_subject);
    }

    #[test]
    fn written_mailboxes_read_back(name in any::<String>(), local in "[a-z0-9.+_-]{1,10}") {
        let address = format!("{local}@example.test");
        let value = mailbox(Some(&name), &address);
        prop_assert!(!value.contains(['\r', '\n']));
        prop_assert_eq!(address_list(&value), vec![address.clone()]);
        prop_assert_eq!(first_address(&value), Some(address));
        let text = scrub(&name);
        let text = text.trim();
        let name_read = display_name(&value);
        prop_assert_eq!(name_read.as_deref(), (!text.is_empty()).then_some(text));
    }

    #[test]
    fn address_parsing_never_panics(value in address_text()) {
        let list = address_list(&value);
        let first = first_address(&value);
        prop_assert_eq!(first.as_ref(), list.first().filter(|a| !a.is_empty()));
        let _ = (display_name(&value), phrase(&value), unfold(value.as_bytes()));
    }

    #[test]
    fn crlf_only_and_idempotent(data in header_bytes(200)) {
        let once = to_crlf(&data);
        for (i, b) in once.iter().enumerate() {
            if *b == b'\n' {
                prop_assert!(i > 0 && once[i - 1] == b'\r');
            }
            if *b == b'\r' {
                prop_assert_eq!(once.get(i + 1), Some(&b'\n'));
            }
        }
        prop_assert_eq!(to_crlf(&once), once);
    }
}
